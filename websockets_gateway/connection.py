"""One client connection: its session data and its bounded, writer-drained outgoing queue."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from aiohttp import web

from . import metrics as metrics_module
from .metrics import GatewayMetrics
from .ratelimit import TokenBucket

logger = logging.getLogger(__name__)

# Close codes this gateway uses beside the WebSocket standard ones (documented in the README).
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_AUTH_TIMEOUT = 4001
CLOSE_SLOW_CONSUMER = 4008
# The gateway lost its Redis subscription for a while: replies and messages published then
# never reached it. The client reconnects and catches up with `sync` (WebSocket "service restart").
CLOSE_SERVICE_RESTART = 1012
# How long a close handshake may take. A client that does not read cannot take our close
# frame either; past this its socket is aborted, so it never holds a handler or memory.
CLOSE_TIMEOUT = 5.0


class Connection:
    """A client WebSocket. Frames to it go through `send`, never straight to the socket,
    so a client that reads slowly only ever fills its own queue."""

    def __init__(self, conn_id: str, ws: web.WebSocketResponse, send_queue_size: int, bucket: TokenBucket,
                 abort: Callable[[], None] | None = None, close_timeout: float = CLOSE_TIMEOUT,
                 metrics: GatewayMetrics | None = None) -> None:
        self.conn_id = conn_id
        self.metrics = metrics if metrics is not None else metrics_module.detached()
        # What every log line about this connection carries (`extra=`).
        self.log_context = {"conn_id": conn_id}
        self.ws = ws
        self._abort = abort
        self._close_timeout = close_timeout
        self.session_data: dict[str, Any] = {}
        self.bucket = bucket
        # Gateway request ids of this connection's requests still waiting for a worker.
        self.in_flight: set[str] = set()
        self.closed = False
        self._outgoing: asyncio.Queue[str] = asyncio.Queue(maxsize=send_queue_size)
        self._writer: asyncio.Task[None] | None = None
        # Whether the writer is inside a send (see `close`).
        self._sending = False
        self._closer: asyncio.Task[None] | None = None

    @property
    def user_pk(self) -> int | None:
        return self.session_data.get("user_pk")

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.conn_id}")

    def send(self, text: str) -> None:
        """Queue one frame; if the queue is full the client is too slow and is disconnected."""
        if self.closed:
            return
        try:
            self._outgoing.put_nowait(text)
        except asyncio.QueueFull:
            logger.warning("user=%s outgoing queue full (%d frames): disconnecting slow client",
                           self.user_pk, self._outgoing.maxsize, extra=self.log_context)
            self.metrics.slow_client_disconnects.inc()
            self.close(CLOSE_SLOW_CONSUMER, "Outgoing queue full")

    def close(self, code: int, reason: str) -> None:
        """Close from synchronous code (timers, routing); safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        self.metrics.closed(code)
        # A writer waiting for its next frame is cancelled. One in the middle of a send is left to
        # finish it and then stops: it may be waiting for the client to read, on the drain future
        # that aiohttp shares among every writer of the socket, the close frame included, and a
        # task cancelled while awaiting that future cancels it for all of them. The close
        # handshake would then die at once, and the socket stay open for as long as the client
        # does not read: forever, for a client that never does.
        if self._writer is not None and not self._sending:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close(code, reason), name=f"close-{self.conn_id}")

    async def _close(self, code: int, reason: str) -> None:
        """The close handshake, bounded: on any outcome but a clean close, the socket is aborted."""
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), self._close_timeout)
            return
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # Not this task's cancellation: a waiter on aiohttp's shared drain future was
            # cancelled elsewhere (a handler cancelled in a pong, say), and the handshake with it.
            logger.warning("close handshake (%d) interrupted: aborting the socket", code, extra=self.log_context)
        except TimeoutError:
            logger.warning("close handshake (%d) took over %.0fs: aborting the socket",
                           code, self._close_timeout, extra=self.log_context)
        except Exception:
            logger.exception("error while closing with %d: aborting the socket", code, extra=self.log_context)
        if self._abort is not None:
            self._abort()

    async def _write_loop(self) -> None:
        try:
            while not self.closed:
                text = await self._outgoing.get()
                self._sending = True
                try:
                    await self.ws.send_str(text)
                finally:
                    self._sending = False
                self.metrics.frames_sent.inc()
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:
            logger.info("write failed, connection gone: %s", exc, extra=self.log_context)
        except Exception:
            logger.exception("writer stopped", extra=self.log_context)

    async def stop(self) -> None:
        """Stop the writer once the socket is done; frames still queued are dropped.

        The close handshake, if one is under way, ends first (it is bounded by the close timeout):
        the writer may be in a send that waits on the same drain future (see `close`).
        """
        self.closed = True
        # wait() does not raise the tasks' CancelledError, but does raise our own.
        if self._closer is not None and not self._closer.done():
            await asyncio.wait({self._closer})
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.wait({self._writer})
