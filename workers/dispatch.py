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
from websockets_gateway import wire

from . import envelopes
from .actions import Action, BatchHandler, Request, registry
from .envelopes import HandlerResult
from .metrics import action_label

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("workers.security")


@dataclass(frozen=True)
class Outgoing:
    """A reply and where it goes: `topic` is the requester's `reply_to` for a reply to it alone;
    for one with `send_to`, the deployment's WORKER_RESPONSE_TOPIC, which every gateway reads,
    used only when presence cannot be read (the consumer routes it by presence, chat/routing.py,
    to the gateways holding its recipients and to `reply_to`)."""

    topic: str
    envelope: dict[str, Any]
    reply_to: str | None = None

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
    try:
        declared, request = _request(data, online)
        outcome: HandlerResult | Exception = declared.handler(request)
    except Exception as exc:
        outcome = exc
    return _settle(data, response_topic, outcome)


def _settle(data: dict[str, Any], response_topic: str, outcome: HandlerResult | Exception) -> Outgoing:
    """The reply to one request, from what its handler returned or raised."""
    if isinstance(outcome, HandlerResult):
        envelope = envelopes.envelope(data, outcome)
    elif isinstance(outcome, ChatError):
        context = {"request_id": data.get("request_id"), "action": action_label(data.get("action"))}
        if isinstance(outcome, InvalidToken):
            # A bad token is worth a security log line (never the token itself).
            security_logger.info("refused: %s", outcome.code, extra=context)
        else:
            # The consumer's "request handled" line gives the error code already.
            logger.debug("refused: %s", outcome.code, extra=context)
        envelope = envelopes.error_envelope(data, outcome.code, outcome.message)
    else:
        logger.error("request failed", exc_info=outcome,
                     extra={"request_id": data.get("request_id"), "action": action_label(data.get("action"))})
        envelope = envelopes.error_envelope(data, "server_error", "Server error")
    topic = data["reply_to"] if envelope["send_to"] is None else response_topic
    return Outgoing(topic, envelope, data["reply_to"])


def _request(data: dict[str, Any], online: OnlineReader | None) -> tuple[Action, Request]:
    """The request's action, and the request for its handler; raises the ChatError it is refused with."""
    request_error = wire.request_error(data)
    if request_error is not None:
        raise InvalidMessageFormat(request_error)
    declared = registry.get(data["action"])
    if declared is None:
        raise InvalidAction(f"Unknown action {data['action'][:40]!r}")
    session_data = data.get("session_data")
    user_pk = session_data.get("user_pk") if isinstance(session_data, dict) else None
    if not declared.loads_user:
        if not services.is_user_pk(user_pk):
            raise AuthenticationRequired()
        return declared, Request(data, None, online, user_pk=user_pk, params=_params(declared, data))
    user = services.active_user(user_pk) if user_pk is not None else None
    if declared.requires_user and user is None:
        raise AuthenticationRequired()
    return declared, Request(data, user, online, user_pk=user.pk if user is not None else None,
                             params=_params(declared, data))


def _params(declared: Action, data: dict[str, Any]) -> dict[str, Any]:
    """The frame's fields as the action's serializer validates them; its first complaint is the
    invalid_message_format reply's message."""
    if declared.fields is None:
        return {}
    serializer = declared.fields(data=data)
    if not serializer.is_valid():
        name, complaints = next(iter(serializer.errors.items()))
        complaint = complaints[0] if isinstance(complaints, list) and complaints else complaints
        raise InvalidMessageFormat(f"{name}: {complaint}" if name != "non_field_errors" else str(complaint))
    return dict(serializer.validated_data)


def process(raw: bytes | str, response_topic: str, online: OnlineReader | None = None) -> Outgoing | None:
    """Decode and answer one raw request; None when it cannot be answered (no reply_to)."""
    return process_batch([raw], response_topic, online)[0]


def process_batch(raws: Sequence[bytes | str], response_topic: str,
                  online: OnlineReader | None = None) -> list[Outgoing | None]:
    """Answer requests that arrived together, in order, one reply (or None) each.

    Each request is its own unit of work, as if it had come alone: its writes commit at once
    (a transaction around the whole batch would hold SQLite's write lock, and every other
    worker, for the batch's reads too; measured, that cost more than the commits it saved).
    What batching saves is the rest: one connection check for the batch; requests of an action
    with a batch handler (new_message) that come one after another, answered together in its
    statements (they still see what the requests before them wrote, and the requests after them
    see what they wrote); and the consumer publishes all the replies in one round trip.
    """
    decoded = [decode(raw) for raw in raws]
    if all(data is None for data in decoded):
        return [None] * len(decoded)  # nothing to answer: no database work either
    close_old_connections()
    try:
        answered: list[Outgoing | None] = []
        run: list[dict[str, Any]] = []  # consecutive requests for one batch handler, run_batch
        run_batch: BatchHandler | None = None
        for data in decoded:
            batch = _batch_handler(data)
            if run and batch is not run_batch:
                answered += _answer_run(run_batch, run, response_topic, online)
                run = []
            run_batch = batch
            if batch is not None:
                run.append(data)
            else:
                answered.append(handle(data, response_topic, online) if data is not None else None)
        if run:
            answered += _answer_run(run_batch, run, response_topic, online)
        return answered
    finally:
        close_old_connections()


def _batch_handler(data: dict[str, Any] | None) -> BatchHandler | None:
    if data is None or not isinstance(data.get("action"), str):
        return None
    declared = registry.get(data["action"])
    return declared.batch if declared is not None else None


def _answer_run(batch: BatchHandler, run: list[dict[str, Any]], response_topic: str,
                online: OnlineReader | None) -> list[Outgoing]:
    """Answer requests of one batch handler together, each as if alone (see `process_batch`)."""
    if len(run) == 1:
        return [handle(run[0], response_topic, online)]
    outcomes: list[HandlerResult | Exception | None] = [None] * len(run)
    requests: list[Request] = []
    positions: list[int] = []
    for position, data in enumerate(run):
        try:
            _, request = _request(data, online)
        except Exception as exc:  # refused (a ChatError), or the database failing: as `handle` would
            outcomes[position] = exc
            continue
        requests.append(request)
        positions.append(position)
    if requests:
        try:
            results = batch(requests)
        except Exception:
            # Whatever it stored is stored once (a retried message finds itself by its uuid), so
            # each is answered again alone, as if the batch handler had never run.
            logger.exception("%d requests answered together failed; answering each alone", len(run))
            return [handle(data, response_topic, online) for data in run]
        for position, result in zip(positions, results):
            outcomes[position] = result
    return [_settle(data, response_topic, outcome) for data, outcome in zip(run, outcomes)]
