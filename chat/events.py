"""Live delivery of what the REST API changes: the WebSocket protocol's success replies, published
to the connections of the users they concern, exactly as a worker publishes them.

Each goes out through `chat.bus.publish` as one envelope on `WORKER_RESPONSE_TOPIC`. Live delivery
is best effort: the database is the source of truth, and a client that missed an event catches up
with `sync`. A publish that fails never fails the request that stored the data.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from . import bus, replies
from .bus import PublishError
from .reading import ReadMark
from .rooms import Departure, RoomSummary
from .services import PostedMessage

logger = logging.getLogger(__name__)

# chat.bus's error, named here too for the callers of these functions.
__all__ = ["PublishError", "message_posted", "room_changed", "room_left", "read_marked", "publish"]


# What the REST API calls once the change is stored. `origin` (the request's path) is for the log.

def message_posted(action: str, posted: PostedMessage, client_uuid: str | None, origin: str) -> None:
    # A retry is published again, as the worker does: a member who missed the first reply gets
    # it now, and clients recognise a message they already have by its id.
    publish(replies.message_posted(replies.rest_frame(action, client_uuid, posted.message.room_id), posted),
            posted.member_ids, room_id=posted.message.room_id, origin=origin)


def room_changed(action: str, summary: RoomSummary, client_uuid: str | None, origin: str) -> None:
    publish(replies.room_changed(replies.rest_frame(action, client_uuid), summary), summary.member_ids,
            room_id=summary.room.pk, origin=origin)


def room_left(departure: Departure, user: Any, client_uuid: str | None, origin: str) -> None:
    publish(replies.member_left(replies.rest_frame("leave_room", client_uuid, departure.room_id), user,
                                departure.cursor),
            departure.notify_ids, room_id=departure.room_id, origin=origin)


def read_marked(user: Any, room_uuid: uuid.UUID, message: int, mark: ReadMark, client_uuid: str | None,
                origin: str) -> None:
    # Every connection of the reader, as over the WebSocket: its open tabs clear their badge too.
    publish(replies.read_marked(replies.rest_frame("mark_read", client_uuid, room_uuid), message, mark), [user.pk],
            room_id=room_uuid, origin=origin)


def publish(response: dict[str, Any], send_to: list[int], *, room_id: uuid.UUID, origin: str) -> None:
    """Hand one reply to the bus; a failure is logged (never the reply's content)."""
    try:
        bus.publish(response, send_to)
    except PublishError as exc:
        logger.warning("%s for room %s (%s) not delivered live: %s; clients catch up with sync",
                       response.get("action"), room_id.hex, origin, exc)
    except Exception:
        # A bug, not an outage; still not the client's problem: the data is stored.
        logger.exception("%s for room %s (%s): publishing failed", response.get("action"), room_id.hex, origin)
