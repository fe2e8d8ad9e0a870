"""The rules of the wire that the gateway, the workers and the REST API share, in one place.

Pure: it imports neither aiohttp nor Django, so `workers` and `chat` import it as the gateway does.
A frame's `uuid` and `action`, the reply's shape, what counts as Unicode, how JSON is written.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# A client's `uuid`: 1 to this many characters (ChatMessage.client_uuid's length too).
MAX_UUID_LENGTH = 64


def uuid_error(uuid: Any) -> str | None:
    """Why `uuid` is no request's uuid, or None when it is one."""
    if not isinstance(uuid, str) or not 1 <= len(uuid) <= MAX_UUID_LENGTH:
        return f"uuid must be a string of 1 to {MAX_UUID_LENGTH} characters"
    return None


def request_error(frame: dict[str, Any]) -> str | None:
    """Why a frame is no request (its `uuid` or `action`), answered `invalid_message_format`;
    None when it is one."""
    error = uuid_error(frame.get("uuid"))
    if error is not None:
        return error
    action = frame.get("action")
    if not isinstance(action, str) or not action:
        return "action must be a non-empty string"
    return None


def is_unicode(text: str) -> bool:
    """Whether `text` is valid Unicode: JSON lets a client send a lone surrogate ("\\ud800"),
    which no UTF-8 encoder (Redis's, the database's) takes."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def reply_head(frame: dict[str, Any]) -> dict[str, Any]:
    """The keys every reply to `frame` starts with: its uuid and action as far as they are
    strings, and its room when it named one."""
    uuid, action, room = frame.get("uuid"), frame.get("action"), frame.get("room")
    head: dict[str, Any] = {"uuid": uuid if isinstance(uuid, str) else None,
                            "action": action if isinstance(action, str) else None}
    if isinstance(room, str):
        head["room"] = room
    return head


def success_reply(frame: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The success reply to `frame`: its head, `"status": "success"`, then `fields` (which may
    replace `room`, never the keys every client reads first)."""
    if "status" in fields or "uuid" in fields or "action" in fields:
        raise ValueError(f"a reply's own keys cannot be fields: {sorted(set(fields) & {'status', 'uuid', 'action'})}")
    reply = reply_head(frame)
    reply["status"] = "success"
    reply.update(fields)
    return reply


def error_reply(frame: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    """The error reply to `frame`: only to the connection that sent it."""
    reply = reply_head(frame)
    reply.update(status="error", error_code=code, error_message=message)
    return reply


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8.

    orjson, except where it refuses a value json can write: an integer beyond 64 bits (a client's,
    echoed in a reply or forwarded to a worker) or a string with a lone surrogate (a client's
    "\\ud800" escape that a reply echoes): json writes those, the surrogate escaped again, so the
    bytes are valid UTF-8 and the client reads back what it sent. orjson writes NaN and
    infinities, which are not JSON, as null; no frame the gateway parses holds one.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if not is_unicode(text):
        text = json.dumps(value, separators=(",", ":"))
    return text.encode("utf-8")
