"""The client side of the wire protocol as pure functions: parse and check frames, build replies.

No I/O here, so every rule tests without a socket.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

ACTIONS = frozenset(
    {
        "authenticate",
        "select_room",
        "new_message",
        "list_rooms",
        "create_room",
        "add_members",
        "leave_room",
        "direct_message",
        "load_history",
        "mark_read",
        "typing",
        "who_is_online",
        "sync",
        "ping",
    }
)
# Every `error_code` of the protocol (PROTOCOL.md's table); the metrics count no others by name.
ERROR_CODES = frozenset(
    {
        "invalid_message_format",
        "invalid_action",
        "invalid_token",
        "authentication_required",
        "invalid_room_id",
        "empty_text",
        "text_too_long",
        "invalid_user",
        "rate_limited",
        "timeout",
        "server_error",
    }
)
# Actions a connection may send before it has authenticated.
ANONYMOUS_ACTIONS = frozenset({"authenticate", "ping"})
# Keys that belong to the gateway on the bus; a client's own values are dropped.
GATEWAY_KEYS = frozenset({"session_data", "request_id", "reply_to", "send_to"})
MAX_UUID_LENGTH = 64
# How deep a frame may nest. No action takes more than an object holding a list of strings;
# the bound keeps every frame far below the recursion limit of json.dumps (the bus) and of the
# worker's json.loads, which a 64 KiB frame of brackets (30,000 deep) would otherwise reach.
MAX_FRAME_DEPTH = 16


class FrameRejected(Exception):
    """A frame that breaks the transport rules: the connection is closed with 1003."""


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):  # 1e400: a number no JSON peer can read back
        raise ValueError("number out of range")
    return number


def parse_frame(text: str) -> dict[str, Any]:
    """Decode one text frame; anything but a JSON object is rejected.

    Strict JSON: NaN and Infinity (which json.loads accepts by default) are not JSON, and
    neither is a number or a nesting the parser cannot hold (a ValueError or RecursionError).
    """
    try:
        frame = json.loads(text, parse_constant=_not_json, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise FrameRejected("Frame is not JSON") from exc
    if not isinstance(frame, dict):
        raise FrameRejected("Frame is not a JSON object")
    return frame


def _shape_error(frame: dict[str, Any]) -> str | None:
    """What makes a parsed frame unfit for the bus, if anything: nesting deeper than
    MAX_FRAME_DEPTH, or a string with a lone surrogate (a "\\ud800" escape), which is JSON but
    not Unicode: neither Redis nor the database can encode it as UTF-8."""
    stack: list[tuple[Any, int]] = [(frame, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if not all(_is_unicode(key) for key in value):
                return "strings must be valid Unicode"
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            if isinstance(value, str) and not _is_unicode(value):
                return "strings must be valid Unicode"
            continue
        if depth > MAX_FRAME_DEPTH:
            return f"frame nests deeper than {MAX_FRAME_DEPTH} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def error_reply(frame: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    """The error reply to `frame`, echoing its uuid, action and room as far as they are usable."""
    reply: dict[str, Any] = {
        "uuid": frame.get("uuid") if isinstance(frame.get("uuid"), str) else None,
        "action": frame.get("action") if isinstance(frame.get("action"), str) else None,
    }
    if "room" in frame and isinstance(frame["room"], str):
        reply["room"] = frame["room"]
    reply.update(status="error", error_code=code, error_message=message)
    return reply


def check_frame(frame: dict[str, Any], authenticated: bool) -> dict[str, Any] | None:
    """The error reply a frame earns before any worker sees it, or None if it may go on."""
    uuid, action = frame.get("uuid"), frame.get("action")
    if not isinstance(uuid, str) or not 1 <= len(uuid) <= MAX_UUID_LENGTH:
        return error_reply(frame, "invalid_message_format", "uuid must be a string of 1 to 64 characters")
    if not isinstance(action, str) or not action:
        return error_reply(frame, "invalid_message_format", "action must be a non-empty string")
    if action not in ACTIONS:
        return error_reply(frame, "invalid_action", f"Unknown action {action[:40]!r}")
    if not authenticated and action not in ANONYMOUS_ACTIONS:
        return error_reply(frame, "authentication_required", "Authenticate first")
    shape_error = _shape_error(frame)
    if shape_error is not None:
        return error_reply(frame, "invalid_message_format", shape_error)
    return None


def ping_reply(frame: dict[str, Any], connections: int, now: float | None = None) -> dict[str, Any]:
    return {
        "uuid": frame["uuid"],
        "action": "ping",
        "status": "success",
        "server_time": time.time() if now is None else now,
        "connections": connections,
    }


def bus_request(
    frame: dict[str, Any], session_data: dict[str, Any], request_id: str, reply_to: str
) -> dict[str, Any]:
    """The frame as a worker receives it: the client's keys, with the gateway's own on top."""
    request = {key: value for key, value in frame.items() if key not in GATEWAY_KEYS}
    request["session_data"] = dict(session_data)
    request["request_id"] = request_id
    request["reply_to"] = reply_to
    return request


def encode(reply: dict[str, Any]) -> str:
    text = json.dumps(reply, separators=(",", ":"), ensure_ascii=False)
    if not _is_unicode(text):
        # A lone surrogate a client sent as an escape and that a reply echoes (its uuid):
        # escaped again, so the frame is valid UTF-8 and the client reads back what it sent.
        text = json.dumps(reply, separators=(",", ":"))
    return text
