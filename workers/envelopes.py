"""The reply envelopes a worker publishes, as the protocol's bus section gives them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from websockets_gateway.wire import dumps, error_reply


@dataclass(frozen=True)
class HandlerResult:
    """What a handler answers: the reply, who gets it (None: the requester alone), new session data."""

    response: dict[str, Any]
    send_to: list[int] | None = None
    session_data: dict[str, Any] | None = None
    # False: the requesting connection gets nothing unless its user is in `send_to` (typing).
    requester_reply: bool = True


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
    return envelope(request, HandlerResult(error_reply(request, code, message)), ok=False)


def encode(built: dict[str, Any]) -> bytes:
    """An envelope as the bus carries it: compact UTF-8 JSON."""
    return dumps(built)
