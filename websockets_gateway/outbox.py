"""A connection's outgoing frames: a bounded queue, the writer task that drains it in order, and
the pause of the read loop while half of it waits."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable

from aiohttp import WSMsgType

from . import metrics as metrics_module
from .metrics import GatewayMetrics

logger = logging.getLogger(__name__)

# Queued like a frame: the writer sends a WebSocket ping in its place (the heartbeat's).
PING = object()


class Hold:
    """Queued like a frame: the writer writes nothing after it until its futures are done, or
    `limit` seconds after it reached it (then `on_expired` is called and the frames go out).

    The router queues one before an `authenticate` reply, on the presence write of its user
    (presence.py `written`). An outbox holds at most one that the writer has not passed: a
    second authentication meanwhile adds its future to it (`Outbox.hold`).
    """

    __slots__ = ("waits", "limit", "on_expired")

    def __init__(self, wait: asyncio.Future[None], limit: float, on_expired: Callable[[], None]) -> None:
        self.waits = [wait]
        self.limit = limit
        self.on_expired = on_expired

    def add(self, wait: asyncio.Future[None]) -> None:
        # Done ones are dropped: the list holds the writes still awaited, each at most once.
        self.waits = [waiting for waiting in self.waits if not waiting.done() and waiting is not wait]
        self.waits.append(wait)

    async def wait(self) -> None:
        """Until every future is done, or `limit` seconds. Never cancels the futures: they are
        the presence writer's, shared with other connections of the same user."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limit
        while pending := [waiting for waiting in self.waits if not waiting.done()]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.on_expired()
                return
            await asyncio.wait(pending, timeout=remaining)


class _Queue(deque):
    """The frames waiting for the writer, and, while the read loop is paused on them (see
    `Outbox.read_pause`), the future that the writer resolves once fewer are waiting. The
    future lives here, not on the outbox: an idle connection has no queue and pays nothing."""

    __slots__ = ("drained",)

    def __init__(self) -> None:
        super().__init__()
        self.drained: asyncio.Future[None] | None = None


class Outbox:
    """Frames for one socket, written in order by one writer task, at most `capacity` waiting.

    An idle outbox holds no queue and no task: the writer starts when a frame is queued and ends
    when the queue is empty (an idle authenticated connection is the common case, and a queue
    with its locks and a waiting task cost about 4.5 KiB of it). Frames are written once `start`
    was called (the handler's socket is ready). A writer that ended for good, because the socket
    failed or the outbox was closed, stays done, and no other is started.
    """

    __slots__ = ("ws", "capacity", "name", "metrics", "_queue", "_started", "_closed", "_writer", "_sending",
                 "_hold")

    def __init__(self, ws: Any, capacity: int, name: str, metrics: GatewayMetrics | None = None) -> None:
        self.ws = ws
        self.capacity = capacity
        # The connection's id: in the writer's log lines and its task's name.
        self.name = name
        self.metrics = metrics if metrics is not None else metrics_module.detached()
        # None when empty.
        self._queue: _Queue | None = None
        self._started = False
        self._closed = False
        self._writer: asyncio.Task[None] | None = None
        # Whether the writer is inside a send (see `close`).
        self._sending = False
        # The Hold queued and not yet passed by the writer, if any.
        self._hold: Hold | None = None

    def __len__(self) -> int:
        """The frames waiting for the writer (the one it is sending not included)."""
        return len(self._queue) if self._queue is not None else 0

    @property
    def idle(self) -> bool:
        """Holding neither a queue nor a writer task: what an idle connection costs."""
        return self._queue is None and self._writer is None

    @property
    def writing(self) -> bool:
        """Whether a writer task is under way (writing, or about to)."""
        return self._writer is not None and not self._writer.done()

    def start(self) -> None:
        """The socket is ready: frames queued so far, and every later one, are written."""
        self._started = True
        if self._queue:
            self._start_writer()

    def put(self, frame: bytes | str | object) -> bool:
        """Queue a text frame (its UTF-8 payload, or a str) or `PING`; False, and nothing queued,
        when `capacity` frames already wait. A closed outbox drops the frame."""
        if self._closed:
            return True
        queue = self._queue
        if queue is None:
            queue = self._queue = _Queue()
        elif len(queue) >= self.capacity:
            return False
        queue.append(frame)
        if self._writer is None and self._started:
            self._start_writer()
        return True

    def hold(self, wait: asyncio.Future[None], limit: float, on_expired: Callable[[], None]) -> bool:
        """Write nothing queued from now on until `wait` is done, or for at most `limit` seconds
        from the moment the writer gets there. Added to the Hold already queued, if one is; False
        when the queue is full (nothing held: the caller's next frame finds it full too)."""
        if self._closed:
            return True
        if self._hold is not None:
            self._hold.add(wait)
            return True
        hold = Hold(wait, limit, on_expired)
        if not self.put(hold):
            return False
        self._hold = hold
        return True

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
        queue = self._queue
        if queue is None or len(queue) < self._read_pause_at() or self._writer is None or self._writer.done():
            return None
        if queue.drained is None or queue.drained.done():
            queue.drained = asyncio.get_running_loop().create_future()
        return queue.drained

    def close(self) -> None:
        """Write nothing more: the frames waiting are dropped, a paused read loop resumes.

        A writer not yet started, or between two frames, is cancelled. One in the middle of a send
        is left to finish it and then stops: it may be waiting for the client to read, on the drain
        future that aiohttp shares among every writer of the socket, the close frame included, and
        a task cancelled while awaiting that future cancels it for all of them. The close handshake
        would then die at once, and the socket stay open for as long as the client does not read:
        forever, for a client that never does.
        """
        self._closed = True
        if self._writer is not None and not self._sending:
            self._writer.cancel()
        self._resume_reading(self._queue)
        self._queue = None

    async def stop(self) -> None:
        """Close, and wait for the writer to end, cancelling it even in a send: for a socket that
        is done (its close handshake, if any, over)."""
        self.close()
        # wait() does not raise the writer's CancelledError, but does raise our own.
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.wait({self._writer})

    def _read_pause_at(self) -> int:
        return max(1, self.capacity // 2)

    def _resume_reading(self, queue: _Queue | None) -> None:
        """End a pause of the read loop (`read_pause`) on this queue, if there is one."""
        if queue is not None and queue.drained is not None:
            if not queue.drained.done():
                queue.drained.set_result(None)
            queue.drained = None

    def _start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name=f"writer-{self.name}")

    async def _write_loop(self) -> None:
        """Write the queued frames in order; end once the queue is empty, or for good on a closed
        outbox or a failed socket."""
        try:
            while not self._closed:
                queue = self._queue
                if not queue:
                    # Drained: no frame can be queued between this check and the task's end (no
                    # await in between), so the next `put` starts a new writer.
                    self._queue = None
                    self._writer = None
                    return
                frame = queue.popleft()
                if queue.drained is not None and len(queue) < self._read_pause_at():
                    self._resume_reading(queue)
                if type(frame) is Hold:
                    # Not a send: a close meanwhile cancels the writer here (see `close`).
                    await frame.wait()
                    if self._hold is frame:
                        self._hold = None
                    continue
                self._sending = True
                try:
                    if type(frame) is bytes:
                        await self.ws.send_frame(frame, WSMsgType.TEXT)
                    elif frame is PING:
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
            logger.info("write failed, connection gone: %s", exc, extra={"conn_id": self.name})
        except Exception:
            logger.exception("writer stopped", extra={"conn_id": self.name})
        finally:
            # Ended for good or cancelled: a read loop paused on this writer must not wait forever.
            self._resume_reading(self._queue)
