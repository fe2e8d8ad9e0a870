"""Server-side events: push a frame of your own to users' WebSocket connections from any Django
code (a view, a signal handler, a Celery task, a management command).

    from chat import publish
    publish.to_users([bob.pk], "invoice.paid", {"invoice": 42})
    publish.to_room(room, "poll.closed", {"poll": 7})

Each connection of those users, on every gateway, gets `{"action": "event", "event": NAME,
"data": {...}}` (no `uuid`: it answers no request). Best effort: a user with no connection at
that moment never gets it, and `sync` does not bring it back; store what must not be lost.
docs/extending.md has the details.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

from . import bus, errors, fields
from .bus import PublishError
from .models import ChatRoom
from .services import room_member_ids

__all__ = ["PublishError", "to_users", "to_room", "event_frame", "MAX_EVENT_NAME_LENGTH"]

# Names like `invoice.paid` or `poll:closed`: lower case, so that a page's listener matches them
# without guessing at case; short, since every frame carries one.
MAX_EVENT_NAME_LENGTH = 64
EVENT_NAME = re.compile(r"[a-z][a-z0-9_.:-]*")


def event_frame(event: Any, data: Any) -> dict[str, Any]:
    """The frame a client gets; ValueError for a bad name, TypeError for data that is not a dict."""
    if not isinstance(event, str):
        raise TypeError(f"event must be a string, not {type(event).__name__}")
    if not 1 <= len(event) <= MAX_EVENT_NAME_LENGTH or EVENT_NAME.fullmatch(event) is None:
        raise ValueError(f"event must be 1 to {MAX_EVENT_NAME_LENGTH} characters matching "
                         f"{EVENT_NAME.pattern}, not {event[:80]!r}")
    if not isinstance(data, dict):
        raise TypeError(f"data must be a dict, not {type(data).__name__}")
    return {"action": "event", "event": event, "data": data}


def _user_ids(user_ids: Iterable[Any]) -> list[int]:
    if isinstance(user_ids, (str, bytes)) or not isinstance(user_ids, Iterable):
        raise TypeError(f"user_ids must be an iterable of user ids, not {type(user_ids).__name__}")
    ids = list(user_ids)
    for user_id in ids:
        # Not a bool: True == 1 would be user 1.
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            raise TypeError(f"a user id must be an int, not {type(user_id).__name__}")
    return sorted(set(ids))


def to_users(user_ids: Iterable[int], event: str, data: dict[str, Any]) -> None:
    """Send the event to every connection of these users (ids), on every gateway.

    ValueError or TypeError for a bad name, ids or data (data JSON cannot write included), before
    anything is sent; PublishError when Redis fails (the caller decides: retry, log, or ignore).
    No ids: nothing is published.
    """
    frame = event_frame(event, data)
    ids = _user_ids(user_ids)
    # Checked before Redis is touched: a value the encoder refuses is the caller's bug, not an outage.
    bus.encode(frame)
    if ids:
        bus.publish(frame, ids)


def to_room(room: ChatRoom | uuid.UUID | str, event: str, data: dict[str, Any]) -> None:
    """Send the event to every connection of the room's members (one query for them); `room` is a
    ChatRoom or its id (a UUID or its hex). A room with no members (or none at all) gets nothing."""
    frame = event_frame(event, data)
    room_uuid = room.pk if isinstance(room, ChatRoom) else _room_id(room)
    bus.encode(frame)
    members = room_member_ids(room_uuid)
    if members:
        bus.publish(frame, members)


def _room_id(room: Any) -> uuid.UUID:
    if isinstance(room, uuid.UUID):
        return room
    if not isinstance(room, str):
        raise TypeError(f"room must be a ChatRoom, a UUID or its hex string, not {type(room).__name__}")
    try:
        return fields.room_id(room)
    except errors.ChatError as exc:  # the protocol's error for a client; a ValueError for a caller
        raise ValueError(f"room is no room id: {room[:80]!r}") from exc
