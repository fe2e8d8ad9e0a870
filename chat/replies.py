"""The success replies of the chat's actions, built once for the worker's answer and for the REST
API's live delivery (`chat.events`).

Each builder takes the frame the reply answers (or, for the REST API, `rest_frame`; for `sync`'s
events, `event_frame`): the reply starts with its uuid, action and room
(`websockets_gateway.wire.reply_head`), then the action's own keys, as docs/protocol.md gives them,
and last the feed's `cursor` when the reply is of a change it stored.
"""

from __future__ import annotations

import uuid
from typing import Any

from websockets_gateway.wire import success_reply

from .lifecycle import ChangedMessage
from .models import ChatMessage
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


def event_frame(action: str, room_id: uuid.UUID) -> dict[str, Any]:
    """What a change in `sync`'s events answers, as a frame: its action and room (the event drops
    the uuid and status again: `event`)."""
    return {"uuid": "", "action": action, "room": room_id.hex}


def event(reply: dict[str, Any], cursor: str) -> dict[str, Any]:
    """A success reply as `sync` sends it: without uuid and status, with its own position."""
    del reply["uuid"], reply["status"]
    reply["cursor"] = cursor
    return reply


def _stored(reply: dict[str, Any], cursor: str | None) -> dict[str, Any]:
    if cursor is not None:
        reply["cursor"] = cursor
    return reply


def message_reply(frame: dict[str, Any], message: ChatMessage, cursor: str | None) -> dict[str, Any]:
    """Any reply with one message (new_message, direct_message, edit_message, delete_message,
    add_reaction, remove_reaction): `{..., "room", "status", "message", "cursor"}`; the room as the
    frame named it, or the message's when it named none (a direct message, a change)."""
    data = message_data(message)
    if isinstance(frame.get("room"), str):
        return _stored(success_reply(frame, message=data), cursor)
    return _stored(success_reply(frame, room=data["room"], message=data), cursor)


def message_posted(frame: dict[str, Any], posted: PostedMessage) -> dict[str, Any]:
    """new_message or direct_message."""
    return message_reply(frame, posted.message, posted.cursor)


def message_changed(frame: dict[str, Any], changed: ChangedMessage) -> dict[str, Any]:
    """edit_message, delete_message, add_reaction or remove_reaction: the message as stored now."""
    return message_reply(frame, changed.message, changed.cursor)


def room_changed(frame: dict[str, Any], summary: RoomSummary) -> dict[str, Any]:
    """create_room or add_members: `{..., "status", "room": {list_rooms form}}` (the room object,
    not the id the frame named)."""
    return _stored(success_reply(frame, room=RoomSerializer(summary).data), summary.cursor)


def member_left(frame: dict[str, Any], user: Any, cursor: str | None = None) -> dict[str, Any]:
    """leave_room: `{..., "room", "status", "user": {"username"}}`."""
    return _stored(success_reply(frame, user=UserSerializer(user).data), cursor)


def read_marked(frame: dict[str, Any], message: int, mark: ReadMark) -> dict[str, Any]:
    """mark_read: `{..., "room", "status", "message", "last_read_id", "unread_count"}`."""
    return _stored(success_reply(frame, message=message, last_read_id=mark.last_read_id,
                                 unread_count=mark.unread_count), mark.cursor)
