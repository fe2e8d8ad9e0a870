"""The worker's bus loop: read requests from one topic, answer each, publish the reply.

Keeps the topic registered for the gateways (`discovery.py`) while it runs. Reconnects to Redis
with backoff; on SIGTERM/SIGINT it finishes the message in hand, unsubscribes, leaves the
registry and returns.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from typing import Any

from websockets_gateway import redis_clients
from websockets_gateway.reconnect import (
    PROBE_INTERVAL, PROBE_MESSAGE, PROBE_TIMEOUT, RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX, REDIS_ERRORS,
    Backoff, SubscriptionProbe, closing_quietly,
)
from chat.routing import AliveCache, ReplyRoutes
from websockets_gateway.keys import Keys

from .actions import registry
from .discovery import Registration
from .dispatch import Outgoing, process_batch
from .metrics import WorkerMetrics, action_label
from .presence import online_user_ids

logger = logging.getLogger(__name__)

# How often the loop wakes with no message, to notice a stop request.
POLL_INTERVAL = 0.5
# The most requests answered together, in one transaction, when several are waiting. Bounds the
# time the first of them waits for the last (and, on SQLite, how long the write lock is held).
BATCH_MAX = 32
# How long a broken subscription is read, after its UNSUBSCRIBE, for requests it accepted.
STRAGGLER_WAIT = 1.0
# Seconds the worker's registration outlives its last heartbeat: CHAT["WORKER_TTL"]'s default.
DEFAULT_TTL = 10.0


class Consumer:
    def __init__(self, redis_url: str, topic: str, response_topic: str,
                 metrics: WorkerMetrics | None = None, ttl: float = DEFAULT_TTL, cluster: bool = False) -> None:
        self.topic = topic
        self.metrics = metrics if metrics is not None else WorkerMetrics(topic)
        self.response_topic = response_topic
        self.keys = Keys(response_topic)
        self._redis_url = redis_url
        self._cluster = cluster
        # Made at first use, inside the loop that retries: a cluster client reads the cluster's
        # slots as it is made, and would fail a worker started while Redis is away.
        self._client: redis_clients.SyncClient | None = None
        self._stopping = False
        self.handled = 0
        self._ttl = ttl
        self._registration: Registration | None = None
        self._routes = ReplyRoutes(self.keys, response_topic, AliveCache(),
                                   on_fallback=self.metrics.routing_fallbacks.inc)

    @property
    def _redis(self) -> redis_clients.SyncClient:
        """The loop's one client. On one Redis, one connection, not a pool: this loop is its only
        user (replies and presence reads, one at a time), and taking a connection from a pool for
        every publish costs more than the publish itself here. On a cluster, one per node."""
        if self._client is None:
            self._client = redis_clients.sync_client(self._redis_url, self._cluster, socket_connect_timeout=2.0,
                                                     socket_timeout=5.0, health_check_interval=10,
                                                     single_connection=True)
        return self._client

    @property
    def registration(self) -> Registration:
        """This worker's entry in the registry of workers, on the loop's client; refreshed from the
        loop, which wakes every POLL_INTERVAL (so a TTL of a few of those at least)."""
        if self._registration is None:
            self._registration = Registration(self._redis, self.topic, self.keys, self._ttl)
        return self._registration

    def _online(self, user_ids: Any) -> set[int]:
        return online_user_ids(self._redis, user_ids, keys=self.keys)

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if not self._stopping:
            logger.info("worker %s: stop requested (signal %s); finishing the message in hand", self.topic, signum)
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> None:
        backoff = Backoff(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX)
        while not self._stopping:
            pubsub: Any = None
            lost: Exception | None = None
            try:
                pubsub = redis_clients.subscription(self._redis)
                pubsub.subscribe(self.topic)
                logger.info("worker subscribed to %s", self.topic)
                self._warn_if_shared()
                self._publish_catalogue()
                # Written again at every subscription, so a Redis that restarted empty has it back;
                # after the subscription, so that a gateway that picks the topic finds a subscriber.
                self.registration.refresh(force=True)
                backoff.reset()
                self._serve(pubsub)
                pubsub.unsubscribe(self.topic)
                logger.info("worker %s unsubscribed after %d requests", self.topic, self.handled)
            except REDIS_ERRORS as exc:
                lost = exc
                if pubsub is not None:
                    self._answer_stragglers(pubsub)
            finally:
                # Closed before the backoff, never after it: when a pub/sub connection breaks while
                # Redis is up (CLIENT KILL, a restart faster than we noticed), redis-py connects it
                # again and subscribes it again by itself before it raises. Left open through the
                # backoff, that subscription holds the topic unread: a request published there
                # counts as received, so the gateway tries no other worker, and is never answered.
                if pubsub is not None:
                    self._close_quietly(pubsub)
            if lost is None or self._stopping:
                continue
            self.metrics.redis_reconnects.inc()
            logger.warning("worker %s lost Redis (%s); reconnecting in %.1fs", self.topic, lost, backoff.current)
            time.sleep(backoff.next_delay())
        if self._client is not None:
            self.registration.withdraw()
            self._client.close()

    def _publish(self, replies: list[Outgoing]) -> None:
        """Publish replies in one round trip (a pipeline, not a transaction, for more than one).

        A reply for several users goes once to each gateway process that holds one of them, and
        to the requester's: one presence read for the whole batch first (`ReplyRoutes`; a read
        that fails sends them to the response topic, which every gateway reads).
        """
        several = [outgoing for outgoing in replies if outgoing.envelope["send_to"] is not None]
        routed = iter(self._routes.topics(self._redis, [(outgoing.envelope["send_to"], outgoing.reply_to)
                                                        for outgoing in several]) if several else ())
        messages: list[tuple[str, bytes]] = []
        for outgoing in replies:
            encoded = outgoing.encode()
            topics = (outgoing.topic,) if outgoing.envelope["send_to"] is None else sorted(next(routed))
            messages += [(topic, encoded) for topic in topics]
        redis_clients.publish_all(self._redis, messages)

    def _answer_stragglers(self, pubsub: Any) -> None:
        """Before a broken subscription is closed: end it cleanly and answer what it accepted.

        redis-py may have connected it again and subscribed it anew before raising, and Redis then
        hands it requests (the gateway counts them as received). UNSUBSCRIBE stops that; every
        request published before it arrives before its confirmation, so reading until then and
        answering what came leaves nothing accepted and unanswered. Bounded by STRAGGLER_WAIT.
        """
        stragglers: list[bytes] = []
        try:
            pubsub.unsubscribe(self.topic)
            deadline = time.monotonic() + STRAGGLER_WAIT
            while pubsub.subscribed and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=0.05)
                if message is not None and message.get("type") == "message":
                    stragglers.append(message["data"])
        except REDIS_ERRORS as exc:
            # Down for good: nothing more was accepted on it.
            logger.debug("worker %s: no clean unsubscribe from a broken subscription: %s", self.topic, exc)
        if not stragglers:
            return
        self.handled += len(stragglers)
        replies = self._answer(stragglers)
        try:
            self._publish(replies)
        except REDIS_ERRORS as exc:
            logger.warning("worker %s: %d replies not published (%s); their requesters get timeout",
                           self.topic, len(replies), exc)

    def _close_quietly(self, pubsub: Any) -> None:
        with closing_quietly(logger, f"worker {self.topic}: closing a broken subscription"):
            pubsub.close()

    def _warn_if_shared(self) -> None:
        # Pub/sub hands every message to every subscriber: two workers on one topic would each
        # answer every request on it. Said loudly, not refused, so that a restart that briefly
        # overlaps the old and the new worker still works.
        try:
            subscribers = redis_clients.subscriber_count(self._redis, self.topic)
        except REDIS_ERRORS as exc:
            # After Redis restarted, the reply connection is the old one, dead: this first command
            # finds it so (and redis-py drops it, the next one connects anew). Only a check: the
            # subscription just made is good, and is not given up for it.
            logger.debug("worker %s: subscribers not counted (%s)", self.topic, exc)
            return
        if subscribers > 1:
            logger.warning("worker topic %s has %d subscribers: give every worker a topic of its own",
                           self.topic, subscribers)

    def _publish_catalogue(self) -> None:
        # The gateways label their metrics by it (websockets_gateway/catalogue.py): written again at
        # every subscription, so a Redis that restarted empty has it back.
        try:
            self._redis.set(self.keys.catalogue, registry.catalogue_json())
        except REDIS_ERRORS as exc:
            logger.warning("worker %s: action catalogue not published (%s)", self.topic, exc)

    def _serve(self, pubsub: Any) -> None:
        probe = SubscriptionProbe(time.monotonic(), PROBE_INTERVAL, PROBE_TIMEOUT)
        while not self._stopping:
            message = pubsub.get_message(timeout=POLL_INTERVAL)
            if message is not None:  # a request, or the answer to a probe (a pong)
                probe.heard(time.monotonic())
            elif probe.ping_due(time.monotonic()):  # raises SubscriptionDead when one went unanswered
                pubsub.ping(PROBE_MESSAGE)
            self.registration.refresh()
            if message is None or message.get("type") != "message":
                continue
            batch = [message["data"]]
            lost: Exception | None = None
            try:
                # What else is already waiting, without blocking: at low load a batch of one.
                while len(batch) < BATCH_MAX and (waiting := pubsub.get_message(timeout=0.0)) is not None:
                    if waiting.get("type") == "message":
                        batch.append(waiting["data"])
            except REDIS_ERRORS as exc:
                # The subscription broke while we gathered. Closed at once, before anything else
                # (redis-py may have subscribed it again already: left open, it would accept
                # requests no one reads, see run()); then what we hold, which Redis handed us, is
                # answered (replies go out on another connection); then run() resubscribes.
                lost = exc
                self._answer_stragglers(pubsub)
                self._close_quietly(pubsub)
            self.handled += len(batch)
            self._publish(self._answer(batch))
            if lost is not None:
                raise lost

    def _answer(self, batch: list[bytes]) -> list[Outgoing]:
        """The replies to a batch of bus messages, counted, timed and logged."""
        started = time.perf_counter()
        try:
            answered = process_batch(batch, self.response_topic, self._online)
        except Exception:
            # process_batch() answers every request it can; this is what it could not (the database
            # failing outside a handler, or at the commit: then nothing of the batch was stored).
            # The requesters get their timeout and retry; we go on.
            logger.exception("worker %s: %d requests not answered", self.topic, len(batch))
            for _ in batch:
                self.metrics.error("unanswered")
            return []
        elapsed = time.perf_counter() - started
        replies = []
        for outgoing in answered:
            if outgoing is None:
                self.metrics.error("malformed_request")
                continue
            response = outgoing.envelope["response"]
            # The batch's time: each request waited for the whole batch's commit.
            status = self.metrics.answered(response.get("action"), response, elapsed)
            # Before the publish, so that the line is written by the time the requester has its reply.
            # Ids, action and outcome only: never the request's token or text.
            logger.info("request handled", extra={
                "request_id": outgoing.envelope.get("request_id"), "action": action_label(response.get("action")),
                "status": status, "duration_ms": round(elapsed * 1000, 2), "topic": self.topic,
                "batch": len(batch)})
            replies.append(outgoing)
        return replies
