"""The chat's data: rooms and the messages posted in them."""

import uuid

from django.conf import settings
from django.db import models

from websockets_gateway import wire


class ChatRoom(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, blank=True)
    is_direct = models.BooleanField(default=False)
    # "LOW_PK:HIGH_PK" for a direct room, None otherwise. Unique, so two first messages racing
    # between the same two users cannot make two direct rooms (see services.direct_room).
    direct_key = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="chat_rooms",
                                   blank=True)
    date_created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-date_created"]

    def __str__(self) -> str:
        return self.name or f"room {self.id.hex}"


class Membership(models.Model):
    """A user's place in a room, and how far they have read it."""

    # The table and column names are those of the plain many-to-many table this model replaced.
    room = models.ForeignKey(ChatRoom, on_delete=models.CASCADE, db_column="chatroom_id")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    # The id of the newest message the user has read in the room (0: none); unread_count counts
    # the room's messages after it. Only ever moves forward.
    last_read_id = models.BigIntegerField(default=0)

    class Meta:
        db_table = "chat_chatroom_users"
        # As the many-to-many table had it (same constraint name in the database).
        unique_together = [("room", "user")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.room_id}"


class ChatMessage(models.Model):
    # No index of their own: every insert writes each index, and these two lead others already
    # (the unique (user, client_uuid) and (room, -id) below), which serve lookups by user or room.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages",
                             db_index=False)
    room = models.ForeignKey(ChatRoom, on_delete=models.CASCADE, related_name="messages", db_index=False)
    date_created = models.DateTimeField(auto_now_add=True, db_index=True)
    text = models.TextField()
    # The uuid of the client frame that created the message: a retried new_message
    # (same user, same uuid) finds this row instead of storing the text twice.
    client_uuid = models.CharField(max_length=wire.MAX_UUID_LENGTH, null=True, blank=True)
    # When its author last edited the text (None: never).
    edited_at = models.DateTimeField(null=True, blank=True)
    # A deleted message stays as a tombstone (its place in history): its text is erased ("") and
    # its reactions deleted. Database defaults, so the hot path's insert (chat.statements) needs
    # not name these columns.
    deleted = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "client_uuid"], name="chat_message_unique_client_uuid"),
        ]
        indexes = [models.Index(fields=["room", "-id"], name="chat_message_room_recent")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.room_id}: {self.text[:40]}"


class EndedSession(models.Model):
    """A login session that logged out recently: the WebSocket tickets issued to it are refused.

    Tickets (chat.tickets) name their session by a keyed hash of its key, never the key itself,
    so a worker cannot look the session up; it looks here instead. A row is needed only as long
    as a ticket of that session could still be valid, and is deleted after that (see
    chat.tickets.session_ended): the table holds the logouts of the last minute or two.
    """

    session_hash = models.CharField(max_length=64, primary_key=True)
    ended_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"session {self.session_hash[:12]}… ended {self.ended_at:%Y-%m-%d %H:%M:%S}"


class ChatReaction(models.Model):
    """One user's reaction with one emoji to a message; a message's reactions are in id order."""

    message = models.ForeignKey(ChatMessage, on_delete=models.CASCADE, related_name="reactions", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=32)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Leads with the message: a page of messages reads its reactions through it.
            models.UniqueConstraint(fields=["message", "user", "emoji"], name="chat_reaction_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.emoji} on {self.message_id}"


class ChatChange(models.Model):
    """The change feed: one row for every stored change, in the order `sync` by cursor walks.

    A change's position is (xid, id). On PostgreSQL `xid` is the writing transaction's id and
    positions are handed out only below the oldest transaction still running (chat.feed), so a
    change that commits late can never land behind a cursor already handed out; on SQLite, whose
    writers take turns, `xid` is 0 and `id` is in commit order. Rows older than
    SYNC_RETENTION_DAYS are deleted (manage.py prune_changes).

    No foreign-key constraints in the database: every message would check three more rows on
    insert. Deleting a room, message or user through the ORM deletes its changes all the same.
    """

    class Kind(models.IntegerChoices):
        NEW_MESSAGE = 1, "new_message"
        DIRECT_MESSAGE = 2, "direct_message"
        EDIT_MESSAGE = 3, "edit_message"
        DELETE_MESSAGE = 4, "delete_message"
        ADD_REACTION = 5, "add_reaction"
        REMOVE_REACTION = 6, "remove_reaction"
        CREATE_ROOM = 7, "create_room"
        ADD_MEMBERS = 8, "add_members"
        LEAVE_ROOM = 9, "leave_room"
        MARK_READ = 10, "mark_read"

    xid = models.BigIntegerField(default=0, db_default=0)
    kind = models.PositiveSmallIntegerField(choices=Kind.choices)
    room = models.ForeignKey(ChatRoom, on_delete=models.CASCADE, related_name="+", db_constraint=False,
                             db_index=False)
    message = models.ForeignKey(ChatMessage, on_delete=models.CASCADE, related_name="+", db_constraint=False,
                                db_index=False, null=True, blank=True)
    # Who made the change (for mark_read and leave_room, also whom it concerns).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+",
                             db_constraint=False, db_index=False)
    at = models.DateTimeField()
    # The uuid of the request that made an edit, a deletion or a reaction: the same request again
    # (a retry) is recognised and changes nothing.
    client_uuid = models.CharField(max_length=wire.MAX_UUID_LENGTH, null=True, blank=True)

    class Meta:
        ordering = ["xid", "id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "client_uuid"], name="chat_change_unique_client_uuid",
                                    condition=models.Q(client_uuid__isnull=False)),
        ]
        indexes = [
            # sync: a user's rooms' changes after a cursor.
            models.Index(fields=["room", "xid", "id"], name="chat_change_room_position"),
            # sync: a user's own read markers and departures (the rooms they left are no longer theirs).
            models.Index(fields=["user", "xid", "id"], name="chat_change_user_position",
                         condition=models.Q(kind__in=[10, 9])),  # MARK_READ, LEAVE_ROOM
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} in {self.room_id} at {self.xid}.{self.pk}"


class FeedState(models.Model):
    """One row: the newest position the feed has pruned. A cursor before it may have missed a
    change that is gone, and is answered `cursor_expired`."""

    pruned_xid = models.BigIntegerField(default=0)
    pruned_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"pruned through {self.pruned_xid}.{self.pruned_id}"
