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
