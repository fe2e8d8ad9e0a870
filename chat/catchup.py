"""`sync` by cursor: the changes a user missed, as the events `sync` answers with.

An event is the success reply a connected member got for the change (chat.replies), without uuid
and status, with its own cursor. Several changes of one message come as one event, at the last
one's place, carrying the message as it is now; so do a room's creation and new members (the room
as it is now), and the user's read markers of a room. A page costs the same few queries whatever
its size: the feed's four (chat.feed.read), then the messages, their reactions, the rooms' four
(chat.rooms), and the names of those who left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model

from . import feed, fields, reactions, replies, rooms
from .models import ChatChange, ChatMessage, Membership
from .reading import SYNC_LIMIT_DEFAULT, SYNC_LIMIT_MAX, ReadMark

Kind = ChatChange.Kind
User = get_user_model()
ROOM_KINDS = frozenset({Kind.CREATE_ROOM, Kind.ADD_MEMBERS})


@dataclass(frozen=True)
class Catchup:
    events: list[dict[str, Any]]
    cursor: str
    has_more: bool


def sync_since(user: Any, since: Any, limit: Any) -> Catchup:
    """Up to `limit` events of the user's changes after cursor `since` ("": none, a cursor of now)."""
    start = feed.parse_cursor(since)
    count = fields.limit(limit, SYNC_LIMIT_DEFAULT, SYNC_LIMIT_MAX)
    if start is None:
        return Catchup([], feed.now().cursor(), has_more=False)
    page = feed.read(user.pk, start, count)
    kept = _latest(page.changes)
    messages = {message.pk: message for message in
                ChatMessage.objects.select_related("user").filter(pk__in=feed.message_changes(kept))}
    reactions.load(messages.values())
    summarized = {change.room_id for change in kept if change.kind in ROOM_KINDS or change.kind == Kind.MARK_READ}
    summaries = {summary.room.pk: summary for summary in
                 rooms.summaries(Membership.objects.filter(user=user, room_id__in=summarized))} if summarized else {}
    leavers = {change.user_id for change in kept if change.kind == Kind.LEAVE_ROOM}
    names = {person.pk: person for person in User.objects.filter(pk__in=leavers)} if leavers else {}
    events = []
    for change in kept:
        built = _event(change, messages, summaries, names)
        if built is not None:
            events.append(replies.event(built, feed.position(change).cursor()))
    return Catchup(events, page.cursor.cursor(), page.has_more)


def _latest(changes: list[ChatChange]) -> list[ChatChange]:
    """The changes with only the last of each message's, each room's (creation and new members)
    and each room's read marker, in position order."""
    last: dict[tuple[str, Any], ChatChange] = {}
    for change in changes:
        if change.kind in feed.MESSAGE_KINDS:
            key: tuple[str, Any] = ("message", change.message_id)
        elif change.kind in ROOM_KINDS:
            key = ("room", change.room_id)
        elif change.kind == Kind.MARK_READ:
            key = ("read", change.room_id)
        else:
            key = ("change", change.pk)
        last.pop(key, None)
        last[key] = change
    return list(last.values())


def _event(change: ChatChange, messages: dict[int, ChatMessage], summaries: dict[Any, rooms.RoomSummary],
           names: dict[int, Any]) -> dict[str, Any] | None:
    """The reply a member got for `change`, in its state now; None when nothing of it is left (the
    message or the user deleted since; a room the user no longer has)."""
    frame = replies.event_frame(Kind(change.kind).label, change.room_id)
    if change.kind in feed.MESSAGE_KINDS:
        message = messages.get(change.message_id)
        return None if message is None else replies.message_reply(frame, message, None)
    if change.kind == Kind.LEAVE_ROOM:
        leaver = names.get(change.user_id)
        return None if leaver is None else replies.member_left(frame, leaver)
    summary = summaries.get(change.room_id)
    if summary is None:
        return None
    if change.kind == Kind.MARK_READ:
        mark = ReadMark(summary.last_read_id, summary.unread_count)
        return replies.read_marked(frame, summary.last_read_id, mark)
    return replies.room_changed(frame, summary)
