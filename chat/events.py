"""Live delivery of what the REST API changes: the WebSocket protocol's success replies, published
to the connections of the users they concern, exactly as a worker publishes them.

The `chat` app imports only Django and REST framework, so the publisher that puts a reply on the
bus is found by its dotted path, `settings.CHAT_EVENT_PUBLISHER` (`workers.broadcast.publish`).
Live delivery is best effort: the database is the source of truth, and a client that missed an
event catches up with `sync`. A publisher that fails never fails the request that stored the data.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from .reading import ReadMark
from .rooms import Departure, RoomSummary
from .serializers import RoomSerializer, UserSerializer, message_data
from .services import PostedMessage

logger = logging.getLogger(__name__)

# publish(response, send_to): put one success reply on the bus for every connection of these users.
Publisher = Callable[[dict[str, Any], list[int]], None]


class PublishError(Exception):
    """A publisher could not hand a reply to the bus (Redis down or too slow)."""


@functools.lru_cache(maxsize=4)
def _publisher(path: str) -> Publisher:
    # Keyed by the path, so that a test overriding the setting gets its own publisher.
    return import_string(path)


def reply_uuid(client_uuid: str | None) -> str:
    """The reply's `uuid`: the client's, when it sent one, else a fresh one."""
    return client_uuid if client_uuid is not None else uuid.uuid4().hex


# The reply bodies, as the protocol's success replies to the same actions over the WebSocket.

def message_reply(action: str, posted: PostedMessage, client_uuid: str | None) -> dict[str, Any]:
    """new_message or direct_message: `{"uuid", "action", "room", "status", "message"}`."""
    return {"uuid": reply_uuid(client_uuid), "action": action, "room": posted.message.room_id.hex,
            "status": "success", "message": message_data(posted.message)}


def room_reply(action: str, summary: RoomSummary, client_uuid: str | None) -> dict[str, Any]:
    """create_room or add_members: `{"uuid", "action", "status", "room": {list_rooms form}}`."""
    return {"uuid": reply_uuid(client_uuid), "action": action, "status": "success",
            "room": RoomSerializer(summary).data}


def departure_reply(departure: Departure, user: Any, client_uuid: str | None) -> dict[str, Any]:
    """leave_room: `{"uuid", "action", "room", "status", "user": {"username"}}`."""
    return {"uuid": reply_uuid(client_uuid), "action": "leave_room", "room": departure.room_id.hex,
            "status": "success", "user": UserSerializer(user).data}


def read_mark_reply(room_uuid: uuid.UUID, message: int, mark: ReadMark, client_uuid: str | None) -> dict[str, Any]:
    """mark_read: `{"uuid", "action", "room", "status", "message", "last_read_id", "unread_count"}`."""
    return {"uuid": reply_uuid(client_uuid), "action": "mark_read", "room": room_uuid.hex, "status": "success",
            "message": message, "last_read_id": mark.last_read_id, "unread_count": mark.unread_count}


# What the REST API calls once the change is stored. `origin` (the request's path) is for the log.

def message_posted(action: str, posted: PostedMessage, client_uuid: str | None, origin: str) -> None:
    # A retry is published again, as the worker does: a member who missed the first reply gets
    # it now, and clients recognise a message they already have by its id.
    publish(message_reply(action, posted, client_uuid), posted.member_ids,
            room_id=posted.message.room_id, origin=origin)


def room_changed(action: str, summary: RoomSummary, client_uuid: str | None, origin: str) -> None:
    publish(room_reply(action, summary, client_uuid), summary.member_ids, room_id=summary.room.pk, origin=origin)


def room_left(departure: Departure, user: Any, client_uuid: str | None, origin: str) -> None:
    publish(departure_reply(departure, user, client_uuid), departure.notify_ids,
            room_id=departure.room_id, origin=origin)


def read_marked(user: Any, room_uuid: uuid.UUID, message: int, mark: ReadMark, client_uuid: str | None,
                origin: str) -> None:
    # Every connection of the reader, as over the WebSocket: its open tabs clear their badge too.
    publish(read_mark_reply(room_uuid, message, mark, client_uuid), [user.pk], room_id=room_uuid, origin=origin)


def publish(response: dict[str, Any], send_to: list[int], *, room_id: uuid.UUID, origin: str) -> None:
    """Hand one reply to the configured publisher; a failure is logged (never the reply's content)."""
    try:
        _publisher(settings.CHAT_EVENT_PUBLISHER)(response, send_to)
    except PublishError as exc:
        logger.warning("%s for room %s (%s) not delivered live: %s; clients catch up with sync",
                       response.get("action"), room_id.hex, origin, exc)
    except Exception:
        # A bug in the publisher, not an outage; still not the client's problem: the data is stored.
        logger.exception("%s for room %s (%s): the publisher failed", response.get("action"), room_id.hex, origin)
