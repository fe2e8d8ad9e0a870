"""Auto-pipelining publisher: the publishes of many requests that come together go to Redis in
one round trip (a non-transactional pipeline), each caller awaiting its own receiver count."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import redis_clients
from .reconnect import REDIS_ERRORS

logger = logging.getLogger(__name__)

# Publishes in one pipeline. Past a hundred or so commands the round trip is already shared
# almost entirely; a larger batch only makes its first caller wait for the others' bytes to be
# written and read, and Redis serve this one client longer before the others.
MAX_BATCH = 128
# Pipelines on their way at once. A new one starts while another is in flight only when a full
# batch waits: under light load requests gather behind the one round trip in flight, under heavy
# load a few full pipelines overlap. Each holds one connection of the pool for its round trip.
MAX_PIPELINES_IN_FLIGHT = 4
# Publishes waiting for a pipeline. Each holds its frame (up to WS_MAX_MESSAGE_SIZE); past this a
# publish fails at once (the caller's BusUnavailable), as Redis that slow could not carry them
# within their timeout anyway.
MAX_WAITING = 10_000


class PublishQueueFull(RedisConnectionError):
    """MAX_WAITING publishes already wait for a pipeline."""


class _Publish:
    """One caller's publish: its command's arguments and the future of its receiver count."""

    __slots__ = ("channel", "payload", "result", "sent")

    def __init__(self, channel: str, payload: bytes | str, result: asyncio.Future[int]) -> None:
        self.channel = channel
        self.payload = payload
        self.result = result
        self.sent = False


class PipelinedPublisher:
    """Gathers the publishes issued in one event-loop iteration, or while a pipeline is on its way,
    into one pipeline of at most `max_batch`.

    The command is `redis_clients.publish`'s: `PUBLISH`, or `SPUBLISH` on a Redis Cluster, whose
    cluster pipeline sends each command to its channel's master. A Redis error fails exactly the publishes of its pipeline; a caller that is
    cancelled, or that waited `timeout` without its pipeline leaving, gives up alone: a pipeline,
    once started, is never cancelled for one caller. The round trip itself is bounded by the
    client's own timeouts (the pool's wait for a connection, the socket timeout).
    """

    def __init__(self, client: redis_clients.AsyncClient, timeout: float,
                 max_batch: int = MAX_BATCH, max_in_flight: int = MAX_PIPELINES_IN_FLIGHT,
                 max_waiting: int = MAX_WAITING, on_round_trip: Callable[[int], None] | None = None) -> None:
        self.client = client
        self.timeout = timeout
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        # Called with the batch's size once per round trip (metrics).
        self._on_round_trip = on_round_trip
        self._waiting: deque[_Publish] = deque()
        # Each pipeline's task and its batch: a task cancelled before it ever ran fails no one itself.
        self._in_flight: dict[asyncio.Task[None], list[_Publish]] = {}
        self._start_scheduled = False
        self.round_trips = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def publish(self, channel: str, payload: bytes | str) -> int:
        """The number of subscribers that received `payload` on `channel`; a RedisError if it could
        not be published (or may not have been: a timeout)."""
        if len(self._waiting) >= self.max_waiting:
            raise PublishQueueFull(f"{len(self._waiting)} publishes already wait for Redis")
        loop = asyncio.get_running_loop()
        entry = _Publish(channel, payload, loop.create_future())
        self._waiting.append(entry)
        self._schedule_start(loop)
        expiry = loop.call_later(self.timeout, self._expire, entry)
        try:
            return await entry.result
        finally:
            expiry.cancel()

    def _expire(self, entry: _Publish) -> None:
        # Only a publish still waiting for its pipeline: one on its way is bounded by the client's timeouts.
        if not entry.sent and not entry.result.done():
            entry.result.set_exception(RedisTimeoutError(
                f"no pipeline could take the publish within {self.timeout:g}s ({self.in_flight} in flight)"))

    def _schedule_start(self, loop: asyncio.AbstractEventLoop) -> None:
        # At the next iteration, not now: the other publishes of this iteration join the batch.
        if not self._start_scheduled:
            self._start_scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        """Start pipelines while the rule allows: none in flight, or a full batch waiting and fewer
        than `max_in_flight` on their way."""
        self._start_scheduled = False
        while self._waiting and (not self._in_flight or (
                len(self._waiting) >= self.max_batch and len(self._in_flight) < self.max_in_flight)):
            batch: list[_Publish] = []
            while self._waiting and len(batch) < self.max_batch:
                entry = self._waiting.popleft()
                if not entry.result.done():  # not cancelled nor expired while it waited
                    entry.sent = True
                    batch.append(entry)
            if not batch:
                continue
            task = asyncio.get_running_loop().create_task(self._send(batch), name="publish-pipeline")
            self._in_flight[task] = batch
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        batch = self._in_flight.pop(task, [])
        if task.cancelled():
            _fail(batch, RedisConnectionError("the publisher was closed"))
        if self._waiting:
            self._schedule_start(asyncio.get_running_loop())

    async def _send(self, batch: list[_Publish]) -> None:
        """One round trip for the batch; each caller gets its own count or error."""
        results: list[Any]
        try:
            if len(batch) == 1:
                results = [await redis_clients.publish(self.client, batch[0].channel, batch[0].payload)]
            else:
                pipe = self.client.pipeline(transaction=False)
                for entry in batch:
                    redis_clients.publish(pipe, entry.channel, entry.payload)
                results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            _fail(batch, RedisConnectionError("the publisher was closed"))
            raise
        except REDIS_ERRORS as exc:
            _fail(batch, exc)
            return
        except Exception as exc:
            # The boundary of the pipeline's task: a client library's surprise fails its callers, logged.
            logger.exception("a publish pipeline of %d failed unexpectedly", len(batch))
            _fail(batch, RedisError(f"publish pipeline failed: {exc!r}"))
            return
        self.round_trips += 1
        if self._on_round_trip is not None:
            self._on_round_trip(len(batch))
        for entry, result in zip(batch, results):
            if entry.result.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                entry.result.set_exception(result)
            else:
                entry.result.set_result(result)

    async def close(self) -> None:
        """Fail the waiting publishes and stop the pipelines on their way."""
        while self._waiting:
            _fail([self._waiting.popleft()], RedisConnectionError("the publisher was closed"))
        tasks = dict(self._in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for batch in tasks.values():
            _fail(batch, RedisConnectionError("the publisher was closed"))


def _fail(batch: list[_Publish], error: BaseException) -> None:
    for entry in batch:
        if not entry.result.done():
            entry.result.set_exception(error)
