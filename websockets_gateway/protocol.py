"""The client side of the wire protocol as pure functions: parse and check frames, build replies.

No I/O here, so every rule tests without a socket.

JSON goes through orjson on the hot path, with the standard library's json module as the reference
and the fallback: whatever orjson refuses, or might read differently, is handed to json, so the
outcome of every frame is the one json gives (see `parse_frame`, `loads` and `encode_frame`).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import orjson

from . import wire
from .wire import error_reply

# The gateway knows no domain action: which actions exist is the workers' registry
# (`workers.actions`); an unknown one is answered `invalid_action` by a worker. What it checks is
# its own: the frame's shape, the rate limit, `ping`, and that only these go before authenticating.
ANONYMOUS_ACTIONS = frozenset({"authenticate", "ping"})
# The error codes the gateway answers with itself; the workers' catalogue gives the others.
GATEWAY_ERROR_CODES = frozenset({"invalid_message_format", "authentication_required", "rate_limited", "timeout"})
# The WebSocket subprotocol of this protocol's version 1 (docs/protocol.md, "Versions and compatibility"): echoed to
# a client that asks for it. A client that asks for none is served version 1 too; one that asks only
# for others is answered with no subprotocol, as RFC 6455 allows, and a browser then fails the
# connection itself. A new major version is a new name here, served beside this one.
SUBPROTOCOLS = ("chat.v1",)
# Keys that belong to the gateway on the bus; a client's own values are dropped.
GATEWAY_KEYS = frozenset({"session_data", "request_id", "reply_to", "send_to"})
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


# orjson reads an integer literal beyond 64 bits as a float (json keeps the int): a float this
# large may be one, so a value holding one is read again by json.
_INT64 = 2.0 ** 63


def _as_json_reads_it(value: Any) -> bool:
    """Whether orjson's reading of a document is exactly json's: no float that may be an integer
    orjson turned to a float (beyond 64 bits), and no container nested deeper than MAX_FRAME_DEPTH
    (a deeper one gets json's verdict, a reply or, past json's own limit, a close: see
    `parse_frame`). O(size of the value); a flat frame is a handful of type checks."""
    if type(value) is float:
        return -_INT64 < value < _INT64
    if type(value) is not dict and type(value) is not list:
        return True
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        container, depth = pending.pop()
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is float:
                if not -_INT64 < item < _INT64:
                    return False
            elif kind is dict or kind is list:
                if depth >= MAX_FRAME_DEPTH:
                    return False
                pending.append((item, depth + 1))
    return True


def parse_frame(text: str) -> dict[str, Any]:
    """Decode one text frame; anything but a JSON object is rejected.

    Strict JSON: NaN and Infinity (which json.loads accepts by default) are not JSON, and
    neither is a number or a nesting the parser cannot hold (a ValueError or RecursionError).

    orjson reads it first; json reads it (and its verdict stands) when orjson refuses it (besides
    what is not JSON: an escaped lone surrogate, "\\ud800", which json reads and `check_frame`
    answers) or when orjson's reading could differ from json's (`_as_json_reads_it`).
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    else:
        if type(frame) is dict and _as_json_reads_it(frame):
            return frame
    try:
        frame = json.loads(text, parse_constant=_not_json, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise FrameRejected("Frame is not JSON") from exc
    if not isinstance(frame, dict):
        raise FrameRejected("Frame is not a JSON object")
    return frame


# What `loads` checks in the raw bytes instead: a run of 19 digits (any integer past 64 bits has
# one; a false alarm only costs a json read), and, in a document long enough to hold it, nesting
# near json's recursion limit (about 1,000 levels; orjson reads 1,024).
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_INT64_DIGITS = b"0" * 19
_DEEP = 900


def loads(data: bytes | str) -> Any:
    """A JSON document from a peer we trust to send JSON (a worker's envelope, off Redis): what
    json.loads gives, read by orjson where that is the same. Raises ValueError (or RecursionError)
    as json.loads does."""
    if type(data) is not bytes:
        return json.loads(data)
    if _INT64_DIGITS in data.translate(_DIGITS_AS_ZEROS) or (
            len(data) > 2 * _DEEP and data.count(b"[") + data.count(b"{") >= _DEEP):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # Not JSON to orjson: NaN, a lone surrogate's escape, a BOM... json has the last word.
        return json.loads(data)


def _shape_error(frame: dict[str, Any]) -> str | None:
    """What makes a parsed frame unfit for the bus, if anything: nesting deeper than
    MAX_FRAME_DEPTH, or a string with a lone surrogate (a "\\ud800" escape), which is JSON but
    not Unicode: neither Redis nor the database can encode it as UTF-8."""
    stack: list[tuple[Any, int]] = [(frame, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if not all(wire.is_unicode(key) for key in value):
                return "strings must be valid Unicode"
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            if isinstance(value, str) and not wire.is_unicode(value):
                return "strings must be valid Unicode"
            continue
        if depth > MAX_FRAME_DEPTH:
            return f"frame nests deeper than {MAX_FRAME_DEPTH} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def check_frame(frame: dict[str, Any], authenticated: bool) -> dict[str, Any] | None:
    """The error reply a frame earns before any worker sees it, or None if it may go on."""
    request_error = wire.request_error(frame)
    if request_error is not None:
        return error_reply(frame, "invalid_message_format", request_error)
    if not authenticated and frame["action"] not in ANONYMOUS_ACTIONS:
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


def resync_notice(reason: str) -> dict[str, Any]:
    """The gateway's own frame telling a client that frames meant for it may have been lost:
    catch up with `sync` from the newest message id it has. No `uuid`: it answers no request
    (docs/protocol.md). `reason` is for people, like a close reason; the action is what counts."""
    return {"action": "resync", "reason": reason}


def bus_request(
    frame: dict[str, Any], session_data: dict[str, Any], request_id: str, reply_to: str
) -> dict[str, Any]:
    """The frame as a worker receives it: the client's keys, with the gateway's own on top."""
    request = {key: value for key, value in frame.items() if key not in GATEWAY_KEYS}
    request["session_data"] = dict(session_data)
    request["request_id"] = request_id
    request["reply_to"] = reply_to
    return request


def encode_payload(value: dict[str, Any]) -> bytes:
    """Compact JSON as UTF-8, for a bus payload that is published at once (see `encode_frame`)."""
    return wire.dumps(value)


def encode_frame(reply: dict[str, Any]) -> bytes:
    """A text frame's UTF-8 payload: sent as it is to every recipient (never encoded again per
    connection), and kept in their send queues until written.

    So it is copied to its size: the bytes orjson returns keep the capacity of its write buffer,
    4 KiB at least and 64 KiB for a 5 KiB document, which every queued frame, and each writer's
    last frame, would hold.
    """
    return bytes(memoryview(encode_payload(reply)))


def encode(reply: dict[str, Any]) -> str:
    """`encode_frame` as text."""
    return encode_frame(reply).decode("utf-8")
