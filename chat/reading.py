"""Reading a room: older history, what a client missed while away, and how far a user has read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from . import errors, feed, fields, reactions, signals
from .models import ChatChange, ChatMessage, ChatRoom, Membership
from .services import member_room

HISTORY_LIMIT_DEFAULT = 20
HISTORY_LIMIT_MAX = 100
SYNC_LIMIT_DEFAULT = 200
SYNC_LIMIT_MAX = 500


@dataclass(frozen=True)
class MessagePage:
    messages: list[ChatMessage]  # oldest first
    has_more: bool


def load_history(user: Any, room_id: Any, before: Any, limit: Any) -> MessagePage:
    """Up to `limit` messages of the room older than message `before` (absent: the newest), oldest first."""
    room = member_room(user, room_id)
    before_id = fields.message_id(before, "before")
    count = fields.limit(limit, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)
    older = room.messages.select_related("user").order_by("-id")
    if before_id is not None:
        older = older.filter(id__lt=before_id)
    newest_first = list(older[:count + 1])
    page = newest_first[:count]
    page.reverse()
    reactions.load(page)
    return MessagePage(page, has_more=len(newest_first) > count)


def sync(user: Any, after: Any, limit: Any) -> MessagePage:
    """Up to `limit` messages with an id above `after` from every room the user is in, in id order."""
    after_id = fields.message_id(after, "after", default=0)
    count = fields.limit(limit, SYNC_LIMIT_DEFAULT, SYNC_LIMIT_MAX)
    rooms = Membership.objects.filter(user=user).values("room_id")
    found = list(ChatMessage.objects.select_related("user").filter(room_id__in=rooms, id__gt=after_id)
                 .order_by("id")[:count + 1])
    reactions.load(found[:count])
    return MessagePage(found[:count], has_more=len(found) > count)


@dataclass(frozen=True)
class ReadMark:
    last_read_id: int
    unread_count: int
    # The feed's cursor for the live reply; None when the mark did not move (nothing stored).
    cursor: str | None = None


def mark_read(user: Any, room_id: Any, message: Any) -> ReadMark:
    """Mark the room read up to message id `message` for the user.

    The mark only moves forward (two tabs marking in either order end at the newer one), and
    never past the room's newest message, so messages that arrive later still count as unread.
    """
    up_to = fields.required_message_id(message, "message")
    room = member_room(user, room_id)
    newest = room.messages.order_by("-id").values_list("id", flat=True).first() or 0
    up_to = min(up_to, newest)
    cursor = None
    with transaction.atomic():
        moved = Membership.objects.filter(room=room, user=user, last_read_id__lt=up_to).update(last_read_id=up_to)
        if moved:
            cursor = feed.record(ChatChange.Kind.MARK_READ, room.pk, user.pk)
    last_read = Membership.objects.filter(room=room, user=user).values_list("last_read_id", flat=True).first()
    if last_read is None:  # the user left the room meanwhile
        raise errors.InvalidRoomId()
    unread = room.messages.filter(id__gt=last_read).exclude(user=user).count()
    if moved:
        signals.send_on_commit(signals.room_read, ChatRoom, user=user, room=room, last_read_id=last_read,
                               unread_count=unread)
    return ReadMark(last_read, unread, cursor)
