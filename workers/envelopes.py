"""The reply envelopes a worker publishes, as the protocol's bus section gives them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class HandlerResult:
    """What a handler answers: the reply, who gets it (None: the requester alone), new session data."""

    response: dict[str, Any]
    send_to: list[int] | None = None
    session_data: dict[str, Any] | None = None
    # False: the requesting connection gets nothing unless its user is in `send_to` (typing).
    requester_reply: bool = True


def base_reply(request: dict[str, Any]) -> dict[str, Any]:
    """The keys every reply to `request` starts with: its uuid and action, and its room if it named one."""
    reply: dict[str, Any] = {"uuid": request.get("uuid"), "action": request.get("action")}
    if isinstance(request.get("room"), str):
        reply["room"] = request["room"]
    return reply


def success(request: dict[str, Any], **fields: Any) -> dict[str, Any]:
    reply = base_reply(request)
    reply["status"] = "success"
    reply.update(fields)
    return reply


def error(request: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    reply = base_reply(request)
    reply.update(status="error", error_code=code, error_message=message)
    return reply


def envelope(request: dict[str, Any], result: HandlerResult, ok: bool = True) -> dict[str, Any]:
    built = {
        "type": "success_response" if ok else "error_response",
        "request_id": request.get("request_id"),
        "send_to": result.send_to,
        "session_data": result.session_data,
        "response": result.response,
    }
    if not result.requester_reply:
        built["requester_reply"] = False
    return built


def error_envelope(request: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    # Errors go to the requesting connection alone and never change its session.
    return envelope(request, HandlerResult(error(request, code, message)), ok=False)


def encode(built: dict[str, Any]) -> bytes:
    """An envelope as the bus carries it: compact UTF-8 JSON.

    orjson on the hot path (a worker encodes every reply). What it refuses goes through json as
    before: an integer beyond 64 bits, or a lone surrogate from a client echoed in a reply, which
    UTF-8 cannot carry and which goes as a JSON escape instead (it reads back the same).
    """
    try:
        return orjson.dumps(built)
    except orjson.JSONEncodeError:
        text = json.dumps(built, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(built, separators=(",", ":")).encode("ascii")
