"""The reply envelopes a worker publishes, as the protocol's bus section gives them (their shape is
`chat.bus.envelope`'s, which the REST API's live events publish too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chat import bus
from websockets_gateway.wire import error_reply


@dataclass(frozen=True)
class HandlerResult:
    """What a handler answers: the reply, who gets it (None: the requester alone), new session data."""

    response: dict[str, Any]
    send_to: list[int] | None = None
    session_data: dict[str, Any] | None = None
    # False: the requesting connection gets nothing unless its user is in `send_to` (typing).
    requester_reply: bool = True


def envelope(request: dict[str, Any], result: HandlerResult, ok: bool = True) -> dict[str, Any]:
    return bus.envelope(request.get("request_id"), result.response, result.send_to, result.session_data, ok=ok,
                        requester_reply=result.requester_reply)


def error_envelope(request: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    # Errors go to the requesting connection alone and never change its session.
    return envelope(request, HandlerResult(error_reply(request, code, message)), ok=False)


# An envelope as the bus carries it: compact UTF-8 JSON.
encode = bus.encode
