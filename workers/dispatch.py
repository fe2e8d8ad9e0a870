"""From raw bus requests to the reply envelopes and the topics to publish them on.

`handle` is the error boundary of one message: whatever a handler raises, the requester gets one
reply, and the worker goes on. `process_batch` answers the requests that were waiting together.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from django.db import close_old_connections

from chat import services
from chat.errors import AuthenticationRequired, ChatError, InvalidAction, InvalidMessageFormat, InvalidToken

from . import envelopes
from .handlers import ROUTES, Request
from .metrics import action_label

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("workers.security")

MAX_UUID_LENGTH = 64


@dataclass(frozen=True)
class Outgoing:
    topic: str
    envelope: dict[str, Any]

    def encode(self) -> bytes:
        return envelopes.encode(self.envelope)


def decode(raw: bytes | str) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        logger.error("dropping a bus request that is not JSON (%d bytes)", len(raw))
        return None
    if not isinstance(data, dict) or not isinstance(data.get("reply_to"), str) or not data.get("request_id"):
        # The keys only: the values may be a client's token or text.
        keys = sorted(data)[:20] if isinstance(data, dict) else type(data).__name__
        logger.error("dropping a bus request without reply_to/request_id (keys: %s)", keys)
        return None
    return data


OnlineReader = Callable[[Iterable[int]], set[int]]


def handle(data: dict[str, Any], response_topic: str, online: OnlineReader | None = None) -> Outgoing:
    """Answer one decoded request; never raises (but for CancelledError-like BaseExceptions)."""
    request_id = data.get("request_id")
    action = data.get("action")
    try:
        envelope = _answer(data, online)
    except ChatError as exc:
        context = {"request_id": request_id, "action": action_label(action)}
        if isinstance(exc, InvalidToken):
            # A bad token is worth a security log line (never the token itself).
            security_logger.info("refused: %s", exc.code, extra=context)
        else:
            # The consumer's "request handled" line gives the error code already.
            logger.debug("refused: %s", exc.code, extra=context)
        envelope = envelopes.error_envelope(data, exc.code, exc.message)
    except Exception:
        logger.exception("request failed", extra={"request_id": request_id, "action": action_label(action)})
        envelope = envelopes.error_envelope(data, "server_error", "Server error")
    topic = data["reply_to"] if envelope["send_to"] is None else response_topic
    return Outgoing(topic, envelope)


def _answer(data: dict[str, Any], online: OnlineReader | None) -> dict[str, Any]:
    uuid, action = data.get("uuid"), data.get("action")
    if not isinstance(uuid, str) or not 1 <= len(uuid) <= MAX_UUID_LENGTH:
        raise InvalidMessageFormat("uuid must be a string of 1 to 64 characters")
    if not isinstance(action, str) or not action:
        raise InvalidMessageFormat("action must be a non-empty string")
    route = ROUTES.get(action)
    if route is None:
        raise InvalidAction(f"Unknown action {action[:40]!r}")
    session_data = data.get("session_data")
    user_pk = session_data.get("user_pk") if isinstance(session_data, dict) else None
    if not route.loads_user:
        if not services.is_user_pk(user_pk):
            raise AuthenticationRequired()
        result = route.handler(Request(data, None, online, user_pk=user_pk))
        return envelopes.envelope(data, result)
    user = services.active_user(user_pk) if user_pk is not None else None
    if route.requires_user and user is None:
        raise AuthenticationRequired()
    result = route.handler(Request(data, user, online))
    return envelopes.envelope(data, result)


def process(raw: bytes | str, response_topic: str, online: OnlineReader | None = None) -> Outgoing | None:
    """Decode and answer one raw request; None when it cannot be answered (no reply_to)."""
    return process_batch([raw], response_topic, online)[0]


def process_batch(raws: Sequence[bytes | str], response_topic: str,
                  online: OnlineReader | None = None) -> list[Outgoing | None]:
    """Answer requests that arrived together, in order, one reply (or None) each.

    Each request is its own unit of work, as if it had come alone: its writes commit at once
    (a transaction around the whole batch would hold SQLite's write lock, and every other
    worker, for the batch's reads too; measured, that cost more than the commits it saved).
    What batching saves is the rest: one connection check for the batch, and the consumer
    publishes all the replies in one round trip.
    """
    decoded = [decode(raw) for raw in raws]
    if all(data is None for data in decoded):
        return [None] * len(decoded)  # nothing to answer: no database work either
    close_old_connections()
    try:
        return [handle(data, response_topic, online) if data is not None else None for data in decoded]
    finally:
        close_old_connections()
