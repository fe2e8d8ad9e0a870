"""Routes a worker's reply envelope to the connection that asked, or to every connection of `send_to`."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from . import metrics as metrics_module
from . import protocol
from .auth_deadline import AuthDeadlines
from .metrics import GatewayMetrics
from .registry import ConnectionRegistry
from .requests import PendingRequest, PendingRequests

logger = logging.getLogger(__name__)

# The longest an authenticate reply waits for its user's presence to be written (see
# `ReplyRouter.route`): past it the reply goes anyway, so that Redis failing for presence alone
# does not stop logins; a reply for that user routed meanwhile may then miss this process.
PRESENCE_HOLD_MAX = 2.0

# The presence writer's `written`: None when the user's presence here is in Redis, else a future
# that its write resolves.
PresenceWritten = Callable[[int], "asyncio.Future[None] | None"]


class ReplyRouter:
    def __init__(self, registry: ConnectionRegistry, pending: PendingRequests,
                 metrics: GatewayMetrics | None = None, auth_deadlines: AuthDeadlines | None = None,
                 presence_written: PresenceWritten | None = None, presence_hold_max: float = PRESENCE_HOLD_MAX) -> None:
        self.registry = registry
        self.pending = pending
        self.metrics = metrics if metrics is not None else metrics_module.detached()
        # Whose deadline a successful authentication ends (None: no deadlines to end).
        self.auth_deadlines = auth_deadlines
        # Whom an authenticate reply waits for (None: it waits for nothing).
        self.presence_written = presence_written
        self.presence_hold_max = presence_hold_max

    def route(self, data: bytes | str) -> None:
        try:
            envelope = protocol.loads(data)
        except ValueError:
            envelope = None
        # Checked before the request is completed: a dropped envelope leaves it to its timeout reply.
        if (not isinstance(envelope, dict) or not isinstance(envelope.get("response"), dict)
                or not isinstance(envelope.get("send_to"), (list, type(None)))):
            # Not the content: a reply carries people's messages.
            logger.error("dropping a malformed reply envelope (%d bytes)", len(data))
            self.metrics.bus_error("malformed_reply")
            return
        request_id = envelope.get("request_id")
        # Only this gateway's own requests can complete here; other gateways' ids are ignored.
        request = self.pending.complete(request_id) if self.pending.owns(request_id) else None
        if request is not None:
            self._answered(request, envelope["response"])
        session_data = envelope.get("session_data")
        if request is not None and isinstance(session_data, dict) and not request.conn.closed:
            self.registry.set_session(request.conn, session_data)
            user_pk = request.conn.user_pk
            if user_pk is not None:
                if self.auth_deadlines is not None:
                    self.auth_deadlines.cancel(request.conn)
                self._hold_until_present(request, user_pk)

        # Encoded once, whatever the number of recipients: every connection sends these bytes.
        text = protocol.encode_frame(envelope["response"])
        send_to = envelope.get("send_to")
        if send_to is None:
            if request is None:
                if self.pending.owns(request_id):
                    logger.info("late or orphaned reply dropped", extra={"request_id": request_id})
                return
            request.conn.send(text)
            return

        recipients = {pk for pk in send_to if isinstance(pk, int)}
        for conn in list(self.registry.of_users(recipients)):
            conn.send(text)
        # The requester hears the outcome even when it is not among the recipients, unless the
        # worker says it must not (`typing` goes to the other members only). Either way the
        # request was completed above, so it gets no timeout reply later.
        requester_reply = envelope.get("requester_reply", True) is not False
        if request is not None and requester_reply and request.conn.user_pk not in recipients:
            request.conn.send(text)

    def _hold_until_present(self, request: PendingRequest, user_pk: int) -> None:
        """Hold what goes to this connection from now on, its authenticate reply first, until
        Redis says that this process holds `user_pk`.

        Replies for several users go only to the processes that presence names (the workers'
        chat/routing.py). Once the client hears it is authenticated it may `sync`; a message
        committed after that sync read the database must then reach it live, so the worker that
        routes it must find this process in the user's set: the write must come before the
        reply. Bounded by `presence_hold_max`; frames routed to the connection meanwhile queue
        behind the reply, so the client sees nothing before it (docs/protocol.md, the bus).
        """
        if self.presence_written is None:
            return
        waiter = self.presence_written(user_pk)
        if waiter is not None:
            request.conn.hold(waiter, self.presence_hold_max)

    def _answered(self, request: PendingRequest, response: dict) -> None:
        """One of this process's requests got its worker's reply: counted, timed and logged once,
        whoever the reply goes to."""
        elapsed = request.elapsed()
        status = self.metrics.answered(request.action, response)
        self.metrics.round_trip(request.action, elapsed)
        # Ids, action and outcome only, never the reply: it carries people's messages.
        logger.info("request answered", extra=request.log_context(
            action=self.metrics.action_label(request.action), status=status, duration_ms=round(elapsed * 1000, 2)))


def send_timeout_reply(request: PendingRequest) -> None:
    """What a request whose deadline passed gets; a reply that comes later is dropped."""
    reply = protocol.error_reply(request.frame_echo, "timeout", "No worker answered in time")
    request.conn.send(protocol.encode_frame(reply))
