"""One client connection: its session data and its bounded, writer-drained outgoing queue."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Set as AbstractSet
from typing import Any, Callable

from aiohttp import WSMsgType, web

from . import metrics as metrics_module
from .metrics import GatewayMetrics
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

_NONE_IN_FLIGHT: frozenset[str] = frozenset()
# Queued like a frame: the writer sends a WebSocket ping in its place (see `ping`).
_PING = object()


class _Outgoing(deque):
    """The frames waiting for the writer, and, while the read loop is paused on them (see
    `Connection.read_pause`), the future that the writer resolves once fewer are waiting. The
    future lives here, not on the connection: an idle connection has no queue and pays nothing."""

    __slots__ = ("drained",)

    def __init__(self) -> None:
        super().__init__()
        self.drained: asyncio.Future[None] | None = None


class Connection:
    """A client WebSocket. Frames to it go through `send`, never straight to the socket,
    so a client that reads slowly only ever fills its own queue.

    An idle connection holds no queue and no task: the writer task starts when a frame is
    queued and ends when the queue is empty (an idle authenticated connection is the common
    case, and a queue with its locks and a waiting task cost about 4.5 KiB of it).
    """

    __slots__ = ("conn_id", "metrics", "ws", "session_data", "bucket", "closed", "_abort", "_close_timeout",
                 "_in_flight", "_send_queue_size", "_outgoing", "_started", "_writer", "_sending", "_closer",
                 "_auth_deadline", "heard", "unheard_visits", "heartbeat_bucket", "reader", "_read_interrupted",
                 "__weakref__")

    def __init__(self, conn_id: str, ws: web.WebSocketResponse, send_queue_size: int, bucket: TokenBucket,
                 abort: Callable[[], None] | None = None, close_timeout: float = CLOSE_TIMEOUT,
                 metrics: GatewayMetrics | None = None) -> None:
        self.conn_id = conn_id
        self.metrics = metrics if metrics is not None else metrics_module.detached()
        self.ws = ws
        self._abort = abort
        self._close_timeout = close_timeout
        self.session_data: dict[str, Any] = {}
        self.bucket = bucket
        # Gateway request ids of this connection's requests still waiting for a worker; a set
        # only while there are some (see `in_flight`).
        self._in_flight: set[str] | None = None
        self.closed = False
        # Frames not yet taken by the writer: at most `send_queue_size`; None when empty.
        self._send_queue_size = send_queue_size
        self._outgoing: _Outgoing | None = None
        # Frames are written once `start` was called (the handler's socket is ready), by a
        # writer task that exists while there are frames to write (None otherwise). One that
        # ended for good, because the socket failed or the connection is closing, stays here
        # done, and no other is started.
        self._started = False
        self._writer: asyncio.Task[None] | None = None
        # Whether the writer is inside a send (see `close`).
        self._sending = False
        self._closer: asyncio.Task[None] | None = None
        # The handler's task while its read loop waits for a frame (None otherwise: the loop sets
        # it), and whether a close cancelled that wait (see `close`).
        self.reader: asyncio.Task[Any] | None = None
        self._read_interrupted = False
        # The timer that closes the connection if it has not authenticated in time; dropped as
        # soon as it has (a pending timer per idle connection costs half a KiB and a heap entry).
        self._auth_deadline: asyncio.TimerHandle | None = None
        # The heartbeat's (heartbeat.py): a frame came since its last visit, its visits in a row
        # without one, and the bucket it is in (None when not watched).
        self.heard = True
        self.unheard_visits = 0
        self.heartbeat_bucket: int | None = None

    @property
    def user_pk(self) -> int | None:
        return self.session_data.get("user_pk")

    @property
    def log_context(self) -> dict[str, Any]:
        """What every log line about this connection carries (`extra=`)."""
        return {"conn_id": self.conn_id}

    @property
    def in_flight(self) -> AbstractSet[str]:
        """The ids of this connection's requests waiting for a worker (read-only: see `track`)."""
        return self._in_flight if self._in_flight is not None else _NONE_IN_FLIGHT

    def track(self, request_id: str) -> None:
        """Count a request as in flight (`requests.PendingRequests` keeps these)."""
        if self._in_flight is None:
            self._in_flight = set()
        self._in_flight.add(request_id)

    def untrack(self, request_id: str) -> None:
        if self._in_flight is not None:
            self._in_flight.discard(request_id)
            if not self._in_flight:
                self._in_flight = None

    def set_auth_deadline(self, deadline: asyncio.TimerHandle) -> None:
        """The timer that closes this connection unless it authenticates first."""
        self.cancel_auth_deadline()
        self._auth_deadline = deadline

    def cancel_auth_deadline(self) -> None:
        if self._auth_deadline is not None:
            self._auth_deadline.cancel()
            self._auth_deadline = None

    @property
    def awaits_authentication(self) -> bool:
        """Whether the authentication deadline is still running."""
        return self._auth_deadline is not None

    def start(self) -> None:
        """The socket is ready: frames queued so far, and every later one, are written."""
        self._started = True
        if self._outgoing:
            self._start_writer()

    def send(self, frame: bytes | str) -> None:
        """Queue one text frame: its UTF-8 payload (`protocol.encode_frame`; one bytes object for
        every recipient of a broadcast), or a str. If the queue is full the client is too slow
        and is disconnected."""
        self._queue(frame)

    def ping(self) -> None:
        """Queue a WebSocket ping (the heartbeat's): written in turn with the frames, by the writer."""
        self._queue(_PING)

    def _queue(self, frame: bytes | str | object) -> None:
        if self.closed:
            return
        outgoing = self._outgoing
        if outgoing is None:
            outgoing = self._outgoing = _Outgoing()
        elif len(outgoing) >= self._send_queue_size:
            logger.warning("user=%s outgoing queue full (%d frames): disconnecting slow client",
                           self.user_pk, self._send_queue_size, extra=self.log_context)
            self.metrics.slow_client_disconnects.inc()
            self.close(CLOSE_SLOW_CONSUMER, "Outgoing queue full")
            return
        outgoing.append(frame)
        if self._writer is None and self._started:
            self._start_writer()

    def read_pause(self) -> asyncio.Future[None] | None:
        """What the read loop awaits before it reads the client's next frame: None to read now, or
        a future that the writer resolves once fewer than half the queue's frames are waiting.

        Each frame read may queue a reply at once (`rate_limited`, `ping`, a refusal): a client
        that sends a burst in one write would otherwise have its frames read, and answered, faster
        than the writer sends the answers, and overflow its own queue (4008). Paused, the loop
        leaves the frames in the socket and TCP slows the client down. The replies of its own
        frames in the queue are then at most half of it plus the ones that workers still owe
        (at most `MAX_IN_FLIGHT`): within the queue while MAX_IN_FLIGHT is at most half of
        SEND_QUEUE_SIZE. A client that does not read what others send it still fills its queue,
        and is closed with 4008. No pause once the writer ended for good: nothing will drain.
        """
        outgoing = self._outgoing
        if outgoing is None or len(outgoing) < self._read_pause_at() or self._writer is None or self._writer.done():
            return None
        if outgoing.drained is None or outgoing.drained.done():
            outgoing.drained = asyncio.get_running_loop().create_future()
        return outgoing.drained

    def _read_pause_at(self) -> int:
        return max(1, self._send_queue_size // 2)

    def _resume_reading(self, outgoing: _Outgoing | None) -> None:
        """End a pause of the read loop (`read_pause`) on this queue, if there is one."""
        if outgoing is not None and outgoing.drained is not None:
            if not outgoing.drained.done():
                outgoing.drained.set_result(None)
            outgoing.drained = None

    def _start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name=f"writer-{self.conn_id}")

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
        self._closer = asyncio.create_task(self._close(code, reason), name=f"close-{self.conn_id}")

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
        # A writer not yet started, or between two frames, is cancelled: nothing more is written.
        # One in the middle of a send is left to finish it and then stops: it may be waiting for
        # the client to read, on the drain future that aiohttp shares among every writer of the
        # socket, the close frame included, and a task cancelled while awaiting that future
        # cancels it for all of them. The close handshake would then die at once, and the socket
        # stay open for as long as the client does not read: forever, for a client that never does.
        if self._writer is not None and not self._sending:
            self._writer.cancel()
        self._resume_reading(self._outgoing)
        self._outgoing = None

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
        """Write the queued frames in order; end once the queue is empty, or for good on a closed
        connection or a failed socket."""
        try:
            while not self.closed:
                outgoing = self._outgoing
                if not outgoing:
                    # Drained: no frame can be queued between this check and the task's end (no
                    # await in between), so the next `send` starts a new writer.
                    self._outgoing = None
                    self._writer = None
                    return
                frame = outgoing.popleft()
                if outgoing.drained is not None and len(outgoing) < self._read_pause_at():
                    self._resume_reading(outgoing)
                self._sending = True
                try:
                    if type(frame) is bytes:
                        await self.ws.send_frame(frame, WSMsgType.TEXT)
                    elif frame is _PING:
                        await self.ws.ping()
                        continue
                    else:
                        await self.ws.send_str(frame)
                finally:
                    self._sending = False
                self.metrics.frames_sent.inc()
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:
            logger.info("write failed, connection gone: %s", exc, extra=self.log_context)
        except Exception:
            logger.exception("writer stopped", extra=self.log_context)
        finally:
            # Ended for good or cancelled: a read loop paused on this writer must not wait forever.
            self._resume_reading(self._outgoing)

    async def stop(self) -> None:
        """Stop the writer once the socket is done; frames still queued are dropped.

        The close handshake, if one is under way, ends first (it is bounded by the close timeout):
        the writer may be in a send that waits on the same drain future (see `close`).
        """
        self.closed = True
        self._resume_reading(self._outgoing)
        self._outgoing = None
        # wait() does not raise the tasks' CancelledError, but does raise our own.
        if self._closer is not None and not self._closer.done():
            await asyncio.wait({self._closer})
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.wait({self._writer})
