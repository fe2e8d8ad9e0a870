"""Rooms: the list a user sees (previews, unread counts), creating, joining, leaving, direct rooms.

Every function raises a `chat.errors.ChatError` with the protocol's code for a request it refuses;
a room the user is not a member of is refused exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from . import errors, feed, fields, policy, reactions, signals, users
from .models import ChatChange, ChatMessage, ChatRoom, Membership
from .services import PostedMessage, member_room, store_message

User = get_user_model()


@dataclass
class RoomSummary:
    """A room as the protocol's list_rooms shows it to one user."""

    room: ChatRoom
    members: list[Any] = field(default_factory=list)  # users.Named (or users), by name
    last_message: ChatMessage | None = None
    unread_count: int = 0
    # How far the user has read the room (the id of the newest message read; 0: none).
    last_read_id: int = 0
    # The feed's cursor for the live reply of the change that made this summary (chat.feed).
    cursor: str | None = None

    @property
    def member_ids(self) -> list[int]:
        return [member.pk for member in self.members]

    def activity(self) -> float:
        # Newest activity first: the last message's time, or the room's creation for an empty room.
        latest = self.last_message.date_created if self.last_message is not None else self.room.date_created
        return latest.timestamp()


def summaries(memberships: QuerySet[Membership]) -> list[RoomSummary]:
    """Summaries of the rooms of these memberships in four queries, whatever their number.

    1. the memberships and their rooms, each with its newest message id and unread count
       (correlated subqueries on the (room, -id) index);
    2. those newest messages, with their authors;
    3. their reactions (none when they have no newest message);
    4. the members of all those rooms.
    """
    room_messages = ChatMessage.objects.filter(room=OuterRef("room_id")).order_by()
    # A user's own messages are never unread to them.
    unread = (room_messages.filter(id__gt=OuterRef("last_read_id")).exclude(user_id=OuterRef("user_id"))
              .values("room").annotate(n=Count("id")).values("n"))
    rows = list(memberships.select_related("room").annotate(
        newest_id=Subquery(room_messages.order_by("-id").values("id")[:1]),
        unread=Coalesce(Subquery(unread, output_field=IntegerField()), Value(0)),
    ))
    if not rows:
        return []
    newest_ids = [row.newest_id for row in rows if row.newest_id is not None]
    newest = {message.pk: message for message in ChatMessage.objects.select_related("user").filter(pk__in=newest_ids)}
    reactions.load(newest.values())
    summaries = {row.room_id: RoomSummary(row.room, [], newest.get(row.newest_id), row.unread, row.last_read_id)
                 for row in rows}
    named = users.names_of(Membership.objects.filter(room_id__in=list(summaries)), ordered=True)
    for room_uuid, user_pk, name in named:
        summaries[room_uuid].members.append(users.Named(user_pk, name))
    return sorted(summaries.values(), key=RoomSummary.activity, reverse=True)


def list_rooms(user: Any) -> list[RoomSummary]:
    """The user's rooms, the one with the newest activity first."""
    return summaries(Membership.objects.filter(user=user))


def room_summary(user: Any, room_id: Any) -> RoomSummary:
    """One room as `user` sees it, if they are a member."""
    found = summaries(Membership.objects.filter(user=user, room_id=fields.room_id(room_id)))
    if not found:
        raise errors.InvalidRoomId()
    return found[0]


def users_named(usernames: Iterable[str]) -> list[Any]:
    """The active users with these login names (USERNAME_FIELD, whatever DISPLAY_NAME shows), in one
    query; any unknown name is an `invalid_user` error."""
    wanted = list(usernames)
    found = {user.get_username(): user
             for user in User.objects.filter(**{f"{users.LOGIN_FIELD}__in": wanted}, is_active=True)}
    for name in wanted:
        if name not in found:
            raise errors.InvalidUser(f"No user named {name[:40]!r}")
    return [found[name] for name in wanted]


def _newest_message_id(room_uuid: uuid.UUID) -> int:
    newest = ChatMessage.objects.filter(room_id=room_uuid).order_by("-id").values_list("id", flat=True).first()
    return newest or 0


def _join(room_uuid: uuid.UUID, users: Iterable[Any]) -> None:
    # A newcomer has read the room up to now: its history is there to scroll, not unread.
    read_up_to = _newest_message_id(room_uuid)
    Membership.objects.bulk_create(
        [Membership(room_id=room_uuid, user=user, last_read_id=read_up_to) for user in users],
        ignore_conflicts=True)


def create_room(user: Any, name: Any, member_names: Any) -> RoomSummary:
    """A new room with the user and the named users as its members."""
    room_name = fields.room_name(name)
    members = [member for member in users_named(fields.usernames(member_names)) if member.pk != user.pk]
    policy.require(policy.current().can_create_room(user, members))
    with transaction.atomic():
        room = ChatRoom.objects.create(name=room_name)
        _join(room.pk, [user, *members])
        cursor = feed.record(ChatChange.Kind.CREATE_ROOM, room.pk, user.pk, at=room.date_created)
    summary = RoomSummary(room, sorted([user, *members], key=users.display_name), cursor=cursor)
    signals.send_on_commit(signals.room_created, ChatRoom, room=room, user=user, member_ids=summary.member_ids)
    return summary


def add_members(user: Any, room_id: Any, member_names: Any) -> RoomSummary:
    """Add the named users to a room the user is a member of; members already there stay as they are.

    The summary is the room as its newcomers see it (their unread count is 0).
    """
    room = member_room(user, room_id)
    if room.is_direct:
        raise errors.InvalidRoomId("A direct room takes no new members")
    newcomers = users_named(fields.usernames(member_names))
    policy.require(policy.current().can_add_members(user, room, newcomers))
    with transaction.atomic():
        _join(room.pk, newcomers)
        cursor = feed.record(ChatChange.Kind.ADD_MEMBERS, room.pk, user.pk)
    summary = room_summary(user, room.pk.hex)
    summary.unread_count = 0
    summary.cursor = cursor
    signals.send_on_commit(signals.members_added, ChatRoom, room=room, user=user, added=newcomers,
                           member_ids=summary.member_ids)
    return summary


@dataclass(frozen=True)
class Departure:
    room_id: uuid.UUID
    # Who hears of it: the members who remain, and the one who left.
    notify_ids: list[int]
    cursor: str | None = None  # the feed's, for the live reply


def leave_room(user: Any, room_id: Any) -> Departure:
    room_uuid = fields.room_id(room_id)
    with transaction.atomic():
        member_ids = list(Membership.objects.select_for_update().filter(room_id=room_uuid)
                          .values_list("user_id", flat=True))
        if user.pk not in member_ids:
            raise errors.InvalidRoomId()
        Membership.objects.filter(room_id=room_uuid, user=user).delete()
        cursor = feed.record(ChatChange.Kind.LEAVE_ROOM, room_uuid, user.pk)
    departure = Departure(room_uuid, sorted(member_ids), cursor)
    signals.send_on_commit(signals.member_left, ChatRoom, room_id=room_uuid, user=user,
                           member_ids=[pk for pk in departure.notify_ids if pk != user.pk])
    return departure


def _direct_key(first: Any, second: Any) -> str:
    low, high = sorted((first.pk, second.pk))
    return f"{low}:{high}"


def direct_room(user: Any, to: Any) -> tuple[ChatRoom, Any]:
    """The one direct room of the two users (and the other user), made on first use; both are (again)
    its members.

    Two first messages racing between the same pair both end in the same room: the second
    insert of the room's unique `direct_key` fails and that request takes the first one's room.
    """
    other = users_named([fields.username(to)])[0]
    if other.pk == user.pk:
        raise errors.InvalidUser("A direct message needs another user")
    # Before the room is made: a refusal stores nothing.
    policy.require(policy.current().can_direct_message(user, other))
    key = _direct_key(user, other)
    room = _existing_direct_room(key)
    created = False
    if room is None:
        name = ", ".join(sorted((users.display_name(user), users.display_name(other))))
        try:
            with transaction.atomic():
                room = ChatRoom.objects.create(name=name, is_direct=True, direct_key=key)
            created = True
        except IntegrityError:
            room = ChatRoom.objects.get(direct_key=key)
    # Either of the two may have left it since; a new message brings both back. In the order of
    # their ids, whoever sends: two first messages racing insert the same two rows, and in
    # opposite orders each would wait on the row the other holds (PostgreSQL: deadlock detected).
    pair = sorted((user, other), key=lambda member: member.pk)
    Membership.objects.bulk_create([Membership(room=room, user=member) for member in pair], ignore_conflicts=True)
    if created:
        signals.send_on_commit(signals.room_created, ChatRoom, room=room, user=user,
                               member_ids=[member.pk for member in pair])
    return room, other


def _existing_direct_room(key: str) -> ChatRoom | None:
    return ChatRoom.objects.filter(direct_key=key).first()


def direct_message(user: Any, to: Any, text: Any, client_uuid: str | None) -> PostedMessage:
    """Store a message in the direct room of the user and `to`, once per (user, client uuid)."""
    clean = fields.text(text)
    client_uuid = fields.client_uuid(client_uuid)
    room, other = direct_room(user, to)
    return store_message(user, room.pk, sorted((user.pk, other.pk)), clean, client_uuid,
                         ChatChange.Kind.DIRECT_MESSAGE)
