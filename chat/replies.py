"""The success replies of the chat's actions, built once for the worker's answer and for the REST
API's live delivery (`chat.events`).

Each builder takes the frame the reply answers (or, for the REST API, `rest_frame`): the reply
starts with its uuid, action and room (`websockets_gateway.wire.reply_head`), then the action's own
keys, as docs/protocol.md gives them.
"""

from __future__ import annotations

import uuid
from typing import Any

from websockets_gateway.wire import success_reply

from .reading import ReadMark
from .rooms import RoomSummary
from .serializers import RoomSerializer, UserSerializer, message_data
from .services import PostedMessage


def rest_frame(action: str, client_uuid: str | None, room_id: uuid.UUID | None = None) -> dict[str, Any]:
    """What a REST request stands for, as a frame: the client's uuid (a fresh one without it), the
    action it does over the WebSocket, and the room it names (as 32 hex digits)."""
    frame: dict[str, Any] = {"uuid": client_uuid if client_uuid is not None else uuid.uuid4().hex,
                             "action": action}
    if room_id is not None:
        frame["room"] = room_id.hex
    return frame


def message_posted(frame: dict[str, Any], posted: PostedMessage) -> dict[str, Any]:
    """new_message or direct_message: `{..., "room", "status", "message"}`; the room is the
    message's when the frame named none (a direct message)."""
    message = message_data(posted.message)
    if isinstance(frame.get("room"), str):
        return success_reply(frame, message=message)
    return success_reply(frame, room=message["room"], message=message)


def room_changed(frame: dict[str, Any], summary: RoomSummary) -> dict[str, Any]:
    """create_room or add_members: `{..., "status", "room": {list_rooms form}}` (the room object,
    not the id the frame named)."""
    return success_reply(frame, room=RoomSerializer(summary).data)


def member_left(frame: dict[str, Any], user: Any) -> dict[str, Any]:
    """leave_room: `{..., "room", "status", "user": {"username"}}`."""
    return success_reply(frame, user=UserSerializer(user).data)


def read_marked(frame: dict[str, Any], message: int, mark: ReadMark) -> dict[str, Any]:
    """mark_read: `{..., "room", "status", "message", "last_read_id", "unread_count"}`."""
    return success_reply(frame, message=message, last_read_id=mark.last_read_id, unread_count=mark.unread_count)
