"""Requests waiting for a worker's reply, by the gateway's own request id, each with a deadline."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Callable

from . import metrics as metrics_module
from .connection import Connection
from .metrics import GatewayMetrics

logger = logging.getLogger(__name__)


_NONE_IN_FLIGHT: frozenset[str] = frozenset()


class TooManyInFlight(Exception):
    """The connection already has its allowed number of requests waiting."""


@dataclass(eq=False, slots=True)
class PendingRequest:
    request_id: str
    conn: Connection
    frame_echo: dict[str, Any]
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    # time.monotonic() when it was registered, just before its publish.
    started_at: float = field(default_factory=time.monotonic)

    @property
    def action(self) -> Any:
        return self.frame_echo.get("action")

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def log_context(self, **fields: Any) -> dict[str, Any]:
        """What a log line about this request carries (`extra=`): its connection, its id, and `fields`."""
        return {"conn_id": self.conn.conn_id, "request_id": self.request_id, **fields}


class PendingRequests:
    """In-flight requests: bounded per connection, each forgotten on reply, timeout or disconnect.

    The total is bounded too: at most `max_in_flight` per open connection.
    """

    def __init__(self, gateway_id: str, timeout: float, max_in_flight: int,
                 on_timeout: Callable[[PendingRequest], None], metrics: GatewayMetrics | None = None) -> None:
        self.gateway_id = gateway_id
        self.metrics = metrics if metrics is not None else metrics_module.detached()
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._on_timeout = on_timeout
        self._sequence = itertools.count(1)
        self._pending: dict[str, PendingRequest] = {}
        # The ids of each connection's requests, for the connections that have some: an idle
        # connection has no entry (most connections, most of the time).
        self._by_conn: dict[Connection, set[str]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def in_flight(self, conn: Connection) -> AbstractSet[str]:
        """The ids of `conn`'s requests waiting for a worker (read-only)."""
        return self._by_conn.get(conn, _NONE_IN_FLIGHT)

    @property
    def busy_connections(self) -> int:
        """How many connections have requests in flight (each holds a set of their ids)."""
        return len(self._by_conn)

    def owns(self, request_id: Any) -> bool:
        return isinstance(request_id, str) and request_id.startswith(self.gateway_id + ":")

    def start(self, conn: Connection, frame_echo: dict[str, Any]) -> PendingRequest:
        """Register a request of `conn`; its deadline starts now."""
        ids = self._by_conn.get(conn)
        if ids is not None and len(ids) >= self.max_in_flight:
            raise TooManyInFlight(f"{len(ids)} requests already in flight")
        request_id = f"{self.gateway_id}:{next(self._sequence)}"
        pending = PendingRequest(request_id, conn, frame_echo)
        pending.timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, request_id)
        self._pending[request_id] = pending
        if ids is None:
            ids = self._by_conn[conn] = set()
        ids.add(request_id)
        return pending

    def complete(self, request_id: Any) -> PendingRequest | None:
        """Forget a request that got its reply; None if it is unknown or already timed out."""
        if not isinstance(request_id, str):
            return None
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            self._forget(pending)
        return pending

    def drop_connection(self, conn: Connection) -> None:
        """Forget every request of a closed connection; their late replies will be dropped."""
        for request_id in self._by_conn.pop(conn, ()):
            pending = self._pending.pop(request_id, None)
            if pending is not None and pending.timer is not None:
                pending.timer.cancel()

    def _expire(self, request_id: str) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return
        self._forget(pending)
        self.metrics.request_timeouts.inc()
        self.metrics.failed(pending.action, "timeout")
        logger.warning("request timed out after %.1fs", self.timeout, extra=pending.log_context(
            action=self.metrics.action_label(pending.action), status="timeout",
            duration_ms=round(pending.elapsed() * 1000, 2)))
        self._on_timeout(pending)

    def _forget(self, pending: PendingRequest) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        ids = self._by_conn.get(pending.conn)
        if ids is not None:
            ids.discard(pending.request_id)
            if not ids:
                del self._by_conn[pending.conn]
