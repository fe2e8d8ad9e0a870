"""One client connection: who it is, and its life: its frames go out through its `Outbox`
(outbox.py), and it ends with a bounded close handshake (closing.py) or an abort."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from aiohttp import web

from . import metrics as metrics_module
from .closing import close_handshake
from .metrics import GatewayMetrics
from .outbox import PING, Outbox
from .ratelimit import TokenBucket

logger = logging.getLogger(__name__)

# Close codes this gateway uses beside the WebSocket standard ones (documented in docs/protocol.md).
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_AUTH_TIMEOUT = 4001
CLOSE_SLOW_CONSUMER = 4008
# Not sent (no close frame reaches a peer that stopped answering pings): the code its socket's
# end is counted under, as RFC 6455 names a connection that ended without a close frame.
CLOSE_ABNORMAL = 1006
# How long a close handshake may take. A client that does not read cannot take our close
# frame either; past this its socket is aborted, so it never holds a handler or memory.
CLOSE_TIMEOUT = 5.0


class Connection:
    """A client WebSocket. Frames to it go through `send`, never straight to the socket, so a
    client that reads slowly only ever fills its own outbox (bounded: full, it is closed, 4008)."""

    __slots__ = ("conn_id", "metrics", "ws", "session_data", "bucket", "closed", "outbox", "_abort",
                 "_close_timeout", "_closer", "heard", "reader", "_read_interrupted", "__weakref__")

    def __init__(self, conn_id: str, ws: web.WebSocketResponse, send_queue_size: int, bucket: TokenBucket,
                 abort: Callable[[], None] | None = None, close_timeout: float = CLOSE_TIMEOUT,
                 metrics: GatewayMetrics | None = None) -> None:
        self.conn_id = conn_id
        self.metrics = metrics if metrics is not None else metrics_module.detached()
        self.ws = ws
        self.session_data: dict[str, Any] = {}
        self.bucket = bucket
        self.closed = False
        self.outbox = Outbox(ws, send_queue_size, conn_id, self.metrics)
        self._abort = abort
        self._close_timeout = close_timeout
        # The close handshake's task, once `close` started it.
        self._closer: asyncio.Task[None] | None = None
        # A frame came since the heartbeat's last visit (heartbeat.py): the handler sets it on every frame.
        self.heard = True
        # The handler's task while its read loop waits for a frame (None otherwise: the loop sets
        # it), and whether a close cancelled that wait (see `close`).
        self.reader: asyncio.Task[Any] | None = None
        self._read_interrupted = False

    @property
    def user_pk(self) -> int | None:
        return self.session_data.get("user_pk")

    @property
    def log_context(self) -> dict[str, Any]:
        """What every log line about this connection carries (`extra=`)."""
        return {"conn_id": self.conn_id}

    def start(self) -> None:
        """The socket is ready: frames queued so far, and every later one, are written."""
        self.outbox.start()

    def send(self, frame: bytes | str) -> None:
        """Queue one text frame: its UTF-8 payload (`protocol.encode_frame`; one bytes object for
        every recipient of a broadcast), or a str. If the outbox is full the client is too slow
        and is disconnected."""
        self._queue(frame)

    def ping(self) -> None:
        """Queue a WebSocket ping (the heartbeat's): written in turn with the frames, by the writer."""
        self._queue(PING)

    def hold(self, wait: asyncio.Future[None], limit: float) -> None:
        """Send nothing queued from now on until `wait` is done, for at most `limit` seconds once
        the frames before are written (`Outbox.hold`): the router's, before an authenticate reply."""
        if self.closed:
            return
        if not self.outbox.hold(wait, limit, self._hold_expired):
            self._full()

    def _hold_expired(self) -> None:
        self.metrics.presence_hold_timeouts.inc()
        logger.warning("user=%s: authenticate reply sent without its presence written (Redis slow or down)",
                       self.user_pk, extra=self.log_context)

    def _queue(self, frame: bytes | str | object) -> None:
        if self.closed:
            return
        if not self.outbox.put(frame):
            self._full()

    def _full(self) -> None:
        logger.warning("user=%s outgoing queue full (%d frames): disconnecting slow client",
                       self.user_pk, self.outbox.capacity, extra=self.log_context)
        self.metrics.slow_client_disconnects.inc()
        self.close(CLOSE_SLOW_CONSUMER, "Outgoing queue full")

    def read_pause(self) -> asyncio.Future[None] | None:
        """What the read loop awaits before it reads the client's next frame (`Outbox.read_pause`):
        None to read now, or a future resolved once the writer has drained half the outbox."""
        return self.outbox.read_pause()

    def read_interrupted(self) -> bool:
        """In the read loop, on a CancelledError out of its wait for a frame: whether that was
        `close` ending the wait, and only that (the cancellation is then withdrawn)."""
        return self._read_interrupted and asyncio.current_task().uncancel() == 0

    def close(self, code: int, reason: str) -> None:
        """Close from synchronous code (timers, routing); safe to call more than once.

        If the handler is waiting for the client's next frame, that wait is cancelled first, so
        that the close handshake reads the client's frames until its Close reply. Closed while
        its handler reads, aiohttp would end the TCP connection as soon as its own Close frame
        is written; with frames of the client's still unread, the kernel answers that with a
        reset, which can destroy the Close frame before the client reads it: a busy client
        would see 1006, not the code it was closed with. The handler's task resumes before the
        close task first runs (both are scheduled here, in this order).
        """
        if self.closed:
            return
        self._stop_writing(code)
        if self.reader is not None:
            self._read_interrupted = True
            self.reader.cancel()
        self._closer = asyncio.create_task(
            close_handshake(self.ws, code, reason, self._close_timeout, self._abort, self.log_context),
            name=f"close-{self.conn_id}")

    def drop(self) -> None:
        """Abort the socket with no close handshake (the heartbeat's, for a peer that stopped
        answering): the handler's read loop ends; counted under 1006."""
        if self.closed:
            return
        if self._abort is None:  # no transport to abort (not seen in practice): a bounded close
            self.close(CLOSE_GOING_AWAY, "No pong")
            return
        self._stop_writing(CLOSE_ABNORMAL)
        self._abort()

    def _stop_writing(self, code: int) -> None:
        self.closed = True
        self.metrics.closed(code)
        self.outbox.close()

    async def stop(self) -> None:
        """Once the socket is done: stop the writer; frames still queued are dropped.

        The close handshake, if one is under way, ends first (it is bounded by the close timeout):
        the writer may be in a send that waits on the same drain future (`Outbox.close`).
        """
        self.closed = True
        self.outbox.close()
        # wait() does not raise the handshake's CancelledError, but does raise our own.
        if self._closer is not None and not self._closer.done():
            await asyncio.wait({self._closer})
        await self.outbox.stop()
