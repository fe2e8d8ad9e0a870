"""The gateway's side of Redis pub/sub: publish requests to a live worker, listen for replies."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable, Iterable, Sequence


from . import metrics as metrics_module
from . import protocol, redis_clients
from .batching import MAX_PIPELINES_IN_FLIGHT, PipelinedPublisher
from .keys import Keys
from .metrics import GatewayMetrics
from .reconnect import (
    PROBE_INTERVAL, PROBE_MESSAGE, PROBE_TIMEOUT, RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX, REDIS_ERRORS,
    Backoff, SubscriptionProbe, closing_quietly, raise_if_cancel_requested,
)

logger = logging.getLogger(__name__)

# A topic that had no subscriber is tried last for this long; after it, one request tries it
# first (a probe, once per period), so a worker that comes back is found without any restart.
DEAD_TOPIC_RETRY_AFTER = 1.0
# Redis connections the publisher may open: one per publish pipeline in flight (batching.py),
# and two for the rest (the health check's PING, the catalogue's read). A command that finds
# them all busy waits for one, for at most the publish timeout (never beyond the request's
# deadline), and only then fails (`timeout`, "Message bus unavailable").
PUBLISH_CONNECTIONS = MAX_PIPELINES_IN_FLIGHT + 2


class BusError(Exception):
    """A request could not be handed to any worker."""


class NoWorkerAvailable(BusError):
    pass


class BusUnavailable(BusError):
    pass


class WorkerTopics:
    """The worker topics, in the order to try them: a dead one due for its probe, live ones shuffled,
    then recently dead ones."""

    def __init__(self, topics: Sequence[str], retry_after: float = DEAD_TOPIC_RETRY_AFTER,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.topics = tuple(topics)
        self.retry_after = retry_after
        self._rng = rng or random.Random()
        self._clock = clock
        self._dead_until: dict[str, float] = {}

    def candidates(self) -> list[str]:
        """Topics to try in order: dead ones due for a probe, the live ones shuffled, the other dead ones.

        A dead topic whose time is up goes to one caller only, first in its list, and stays dead
        for everyone else until that probe's publish marks it alive or dead again. Without this,
        every request publishing while the first probe is on its way to Redis would probe too:
        a herd of publishes reaching no one each time the penalty ends, under load.
        """
        now = self._clock()
        due = [t for t in self.topics if t in self._dead_until and self._dead_until[t] <= now]
        for topic in due:
            self._dead_until[topic] = now + self.retry_after
        live = [t for t in self.topics if t not in self._dead_until]
        dead = [t for t in self.topics if t not in due and t in self._dead_until]
        self._rng.shuffle(live)
        self._rng.shuffle(dead)
        return due + live + dead

    @property
    def dead(self) -> frozenset[str]:
        """The topics tried last: no subscriber took the last publish to them."""
        return frozenset(self._dead_until)

    def mark_dead(self, topic: str) -> None:
        self._dead_until[topic] = self._clock() + self.retry_after

    def mark_alive(self, topic: str) -> None:
        self._dead_until.pop(topic, None)

    def update(self, topics: Iterable[str]) -> None:
        """Choose among `topics` from now on (the live workers of the registry, discovery.py).

        A topic that stays keeps its dead-topic penalty; one that goes loses it, so that the map
        holds only topics in the choice."""
        self.topics = tuple(sorted(set(topics)))
        kept = set(self.topics)
        for topic in [t for t in self._dead_until if t not in kept]:
            del self._dead_until[topic]


# On a Redis Cluster, the publisher's client has this many connections per node beyond the
# publishes' own: the catalogue read and the health check's PING take theirs while every
# publish holds one.
CLUSTER_SPARE_CONNECTIONS = 2


def publisher_client(redis_url: str, timeout: float, max_connections: int = PUBLISH_CONNECTIONS,
                     cluster: bool = False) -> redis_clients.AsyncClient:
    """A Redis client whose pool holds at most `max_connections`; a command that finds them all
    busy waits up to `timeout` for one (then raises redis's ConnectionError, "No connection
    available"), and each round trip is bounded by `timeout` too. On a cluster the bound is per
    node, where the pipelined publisher's own bound (at most MAX_PIPELINES_IN_FLIGHT at once)
    keeps it from running out: redis-py's cluster client does not wait for a connection."""
    return redis_clients.async_client(
        redis_url, cluster, max_connections=max_connections + (CLUSTER_SPARE_CONNECTIONS if cluster else 0),
        pool_timeout=timeout, socket_timeout=timeout, socket_connect_timeout=min(timeout, 2.0))


class Bus:
    def __init__(self, redis_url: str, worker_topics: Sequence[str], response_topic: str,
                 reply_topic: str, on_reply: Callable[[bytes], None], publish_timeout: float,
                 publisher: redis_clients.AsyncClient | None = None,
                 subscriber: redis_clients.AsyncClient | None = None,
                 on_resubscribed: Callable[[], None] | None = None, metrics: GatewayMetrics | None = None,
                 cluster: bool = False) -> None:
        self.response_topic = response_topic
        self.keys = Keys(response_topic)
        self.metrics = metrics if metrics is not None else metrics_module.detached()
        self.reply_topic = reply_topic
        self.topics = WorkerTopics(worker_topics)
        self._on_reply = on_reply
        # Called when the subscription is back after it was lost: whatever was published to
        # our topics in between is gone (pub/sub keeps nothing), and the app must say so.
        self._on_resubscribed = on_resubscribed
        self._was_subscribed = False
        self._publisher = publisher or publisher_client(redis_url, publish_timeout, cluster=cluster)
        # The requests of many clients that come together share one round trip (SPUBLISH on a cluster).
        self._pipelined = PipelinedPublisher(self._publisher, publish_timeout, on_round_trip=self._round_trip)
        # No socket timeout on the subscriber: it blocks reading on purpose. A health-check
        # PING on an idle connection finds a half-open socket instead.
        self._subscriber = subscriber or redis_clients.async_client(
            redis_url, cluster, socket_connect_timeout=2.0, health_check_interval=10)
        self.subscribed = asyncio.Event()
        self.reconnects = 0
        self.probe_interval = PROBE_INTERVAL
        self.probe_timeout = PROBE_TIMEOUT

    async def publish_request(self, request: dict[str, Any]) -> str:
        """Publish to one live worker topic and return it; raise BusError if none takes it."""
        payload = protocol.encode_payload(request)
        for topic in self.topics.candidates():
            try:
                receivers = await self._pipelined.publish(topic, payload)
            except REDIS_ERRORS as exc:
                self.metrics.bus_error("redis_unavailable")
                raise BusUnavailable(f"Redis unavailable: {exc}") from exc
            if receivers:
                self.topics.mark_alive(topic)
                return topic
            logger.warning("worker topic %s has no subscriber; trying another", topic)
            self.metrics.bus_error("topic_without_worker")
            self.topics.mark_dead(topic)
        self.metrics.bus_error("no_worker")
        raise NoWorkerAvailable("No worker is listening on any topic")

    def _round_trip(self, publishes: int) -> None:
        self.metrics.publish_round_trips.inc()

    @property
    def commands(self) -> redis_clients.AsyncClient:
        """The publisher's client, for this process's other short commands (the worker registry)."""
        return self._publisher

    async def read_catalogue(self) -> bytes | None:
        """The action catalogue the workers published (catalogue.py), or None."""
        return await self._publisher.get(self.keys.catalogue)

    async def ping(self) -> bool:
        try:
            return bool(await self._publisher.ping())
        except REDIS_ERRORS:
            return False

    async def run_subscriber(self) -> None:
        """Listen on our reply topic and the shared response topic forever, reconnecting with backoff.

        The boundary of the task: whatever fails in it, a Redis error or any other exception (a
        bug, a client library's surprise), is logged and the subscription is made again, so that
        the process never goes on serving without its replies. Only cancellation ends it.
        """
        backoff = Backoff(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX)
        while True:
            pubsub = redis_clients.async_subscription(self._subscriber)
            try:
                await pubsub.subscribe(self.reply_topic, self.response_topic)
                self.subscribed.set()
                logger.info("subscribed to %s and %s", self.reply_topic, self.response_topic)
                if self._was_subscribed:
                    self._resubscribed()
                self._was_subscribed = True
                loop = asyncio.get_running_loop()
                probe = SubscriptionProbe(loop.time(), self.probe_interval, self.probe_timeout)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    raise_if_cancel_requested()
                    # Reset once the subscription has worked, not merely been made: one that
                    # fails at its first read every time still backs off.
                    backoff.reset()
                    if message is not None:  # a reply, or the answer to a probe (a pong)
                        probe.heard(loop.time())
                        if message["type"] == "message":
                            self._deliver(message["data"])
                    elif probe.ping_due(loop.time()):  # raises SubscriptionDead when one went unanswered
                        await pubsub.ping(PROBE_MESSAGE)
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                self.reconnects += 1
                self.metrics.redis_reconnects.inc()
                logger.warning("reply subscription lost (%s); reconnecting in %.1fs", exc, backoff.current)
            except Exception:
                self.reconnects += 1
                self.metrics.redis_reconnects.inc()
                self.metrics.bus_error("subscriber_failed")
                logger.exception("reply subscriber failed unexpectedly; subscribing again in %.1fs", backoff.current)
            finally:
                self.subscribed.clear()
                with closing_quietly(logger, "closing a broken subscription"):
                    await pubsub.aclose()
            await asyncio.sleep(backoff.next_delay())

    def _resubscribed(self) -> None:
        if self._on_resubscribed is None:
            return
        try:
            self._on_resubscribed()
        except Exception:
            logger.exception("the resubscription handler failed")

    def _deliver(self, data: bytes) -> None:
        # Every envelope read, before routing knows whether this process holds a recipient.
        self.metrics.envelopes_received.inc()
        # The boundary of one reply: a reply that breaks routing is logged, the next one goes on.
        self.metrics.bus_envelopes.inc()
        try:
            self._on_reply(data)
        except Exception:
            logger.exception("could not route a reply (%d bytes)", len(data))
            self.metrics.bus_error("routing_failed")

    async def close(self) -> None:
        await self._pipelined.close()
        await self._publisher.aclose()
        await self._subscriber.aclose()

