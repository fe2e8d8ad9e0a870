"""Closes the connections that have not authenticated in time (4001): one timer per connection
still anonymous, dropped as soon as it authenticates or closes."""

from __future__ import annotations

import asyncio
import logging

from .connection import CLOSE_AUTH_TIMEOUT, Connection

logger = logging.getLogger(__name__)


class AuthDeadlines:
    """The authentication deadlines of this process's connections.

    A connection has an entry only while its deadline runs: a pending timer per idle connection
    would cost half a KiB and an entry in the event loop's timer heap, so authenticating drops it.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._timers: dict[Connection, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, conn: Connection) -> bool:
        """Whether `conn`'s deadline is still running."""
        return conn in self._timers

    def start(self, conn: Connection) -> None:
        """Close `conn` in `timeout` seconds unless it has authenticated by then."""
        self.cancel(conn)
        self._timers[conn] = asyncio.get_running_loop().call_later(self.timeout, self._expire, conn)

    def cancel(self, conn: Connection) -> None:
        """Drop `conn`'s deadline, if it has one: it authenticated, or it is gone."""
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, conn: Connection) -> None:
        self._timers.pop(conn, None)
        if conn.user_pk is None:
            logger.info("did not authenticate in time", extra=conn.log_context)
            conn.close(CLOSE_AUTH_TIMEOUT, "Authentication timeout")
