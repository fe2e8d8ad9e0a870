"""One client connection: its session data and its bounded, writer-drained outgoing queue."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from aiohttp import web

from .ratelimit import TokenBucket

logger = logging.getLogger(__name__)

# Close codes this gateway uses beside the WebSocket standard ones (documented in the README).
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_AUTH_TIMEOUT = 4001
CLOSE_SLOW_CONSUMER = 4008
# How long a close handshake may take. A client that does not read cannot take our close
# frame either; past this its socket is aborted, so it never holds a handler or memory.
CLOSE_TIMEOUT = 5.0


class Connection:
    """A client WebSocket. Frames to it go through `send`, never straight to the socket,
    so a client that reads slowly only ever fills its own queue."""

    def __init__(self, conn_id: str, ws: web.WebSocketResponse, send_queue_size: int, bucket: TokenBucket,
                 abort: Callable[[], None] | None = None, close_timeout: float = CLOSE_TIMEOUT) -> None:
        self.conn_id = conn_id
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
            logger.warning("conn=%s user=%s outgoing queue full (%d frames): disconnecting slow client",
                           self.conn_id, self.user_pk, self._outgoing.maxsize)
            self.close(CLOSE_SLOW_CONSUMER, "Outgoing queue full")

    def close(self, code: int, reason: str) -> None:
        """Close from synchronous code (timers, routing); safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close(code, reason), name=f"close-{self.conn_id}")

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), self._close_timeout)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            logger.warning("conn=%s close handshake (%d) took over %.0fs: aborting the socket",
                           self.conn_id, code, self._close_timeout)
            if self._abort is not None:
                self._abort()
        except Exception:
            logger.exception("conn=%s error while closing with %d", self.conn_id, code)

    async def _write_loop(self) -> None:
        try:
            while True:
                text = await self._outgoing.get()
                await self.ws.send_str(text)
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:
            logger.info("conn=%s write failed, connection gone: %s", self.conn_id, exc)
        except Exception:
            logger.exception("conn=%s writer stopped", self.conn_id)

    async def stop(self) -> None:
        """Stop the writer once the socket is done; frames still queued are dropped."""
        self.closed = True
        tasks = {task for task in (self._writer, self._closer) if task is not None and not task.done()}
        if self._writer is not None:
            self._writer.cancel()
        if tasks:
            # wait() does not raise the writer's CancelledError, but does raise our own.
            await asyncio.wait(tasks)
