"""Makes every part's Redis clients and does their pub/sub, on one Redis or on a Redis Cluster.

Pure (no aiohttp, no Django): the gateway, the workers and `chat` make their clients here and
publish and subscribe through it. With `cluster` (REDIS_CLUSTER=1), the URL names one node of a
Redis Cluster of Redis 7 or later: the clients are redis-py's cluster clients, and channels are
sharded (SPUBLISH, SSUBSCRIBE: a channel lives on the master that serves its slot, so pub/sub
spreads over the masters instead of every message going to every node). The keys the parts share
carry one hash tag (keys.py), so each multi-key command and MULTI stays on one slot. The helpers
below tell the two kinds of client apart by the client itself: code that holds a client needs no flag.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from .reconnect import (
    PROBE_INTERVAL, PROBE_MESSAGE, PROBE_TIMEOUT, REDIS_ERRORS, SubscriptionProbe, closing_quietly,
)

logger = logging.getLogger(__name__)

AsyncClient: TypeAlias = aioredis.Redis | AsyncRedisCluster
SyncClient: TypeAlias = redis.Redis | RedisCluster

__all__ = ["REDIS_ERRORS", "async_client", "async_subscription", "cluster_from_env", "is_cluster", "publish",
           "subscriber_count", "subscription", "sync_client"]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})

# How long one read of a sharded subscription's node waits before it is made again: bounds how
# late a reader notices its own cancellation, not how late a message arrives (each node is read
# by a task of its own, so a message on one never waits for another's read to time out).
NODE_READ_SLICE = 1.0
# A sync subscription over several nodes reads each for at most this long in turn.
SYNC_NODE_SLICE = 0.05


# A node's subscription connection is not reconnected behind the caller's back (which would
# subscribe it again silently, hiding the gap): its first failure is the caller's to handle.
_NO_RETRY = Retry(NoBackoff(), 0)
_NO_ASYNC_RETRY = AsyncRetry(NoBackoff(), 0)
# A cluster client's own retries of a command that met a lost node or a cluster that is down (each
# after reading the slots again): a few, soon, so that a command fails within its socket timeouts
# and the part's own loop (with its backoff, its `timeout` reply) takes over. redis-py's default,
# ten with up to a second between them, holds a request past its deadline.
CLUSTER_RETRIES = 3
CLUSTER_RETRY_CAP = 0.2


def _cluster_retry(asyncio_client: bool) -> Retry | AsyncRetry:
    backoff = ExponentialWithJitterBackoff(base=0.01, cap=CLUSTER_RETRY_CAP)
    return AsyncRetry(backoff, CLUSTER_RETRIES) if asyncio_client else Retry(backoff, CLUSTER_RETRIES)


def cluster_from_env(env: Mapping[str, str] | None = None) -> bool:
    """REDIS_CLUSTER from the environment: 1, true, yes or on (any case) says REDIS_URL is a cluster's
    node; unset, empty, 0, false, no or off that it is one Redis; anything else is a ValueError."""
    env = os.environ if env is None else env
    value = (env.get("REDIS_CLUSTER") or "").strip().lower()
    if value not in TRUE_WORDS | FALSE_WORDS:
        raise ValueError(f"REDIS_CLUSTER={value!r} is not a boolean: use 1 or 0 (true/false, yes/no, on/off)")
    return value in TRUE_WORDS


def is_cluster(client: Any) -> bool:
    """Whether `client` (a client or a pipeline, sync or async) talks to a Redis Cluster."""
    return isinstance(client, (RedisCluster, AsyncRedisCluster, ClusterPipeline, AsyncClusterPipeline))


def _options(socket_timeout: float | None, socket_connect_timeout: float | None,
             health_check_interval: float) -> dict[str, Any]:
    """The connection options of a client: a socket timeout (None: none), and a health check
    only when asked for (redis-py's default is none)."""
    options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout}
    if health_check_interval:
        options["health_check_interval"] = health_check_interval
    return options


def async_client(url: str, cluster: bool, *, socket_timeout: float | None = None,
                 socket_connect_timeout: float | None = 2.0, health_check_interval: float = 0,
                 max_connections: int | None = None, pool_timeout: float | None = None) -> AsyncClient:
    """An asyncio client of `url`.

    `max_connections` bounds the connections: on one Redis, in a blocking pool where a command that
    finds them all busy waits up to `pool_timeout` for one; on a cluster, per node (redis-py's
    cluster client refuses past them at once, so a caller that must queue bounds its own
    concurrency, as the gateway's publisher does). A cluster client connects at its first command.
    """
    options = _options(socket_timeout, socket_connect_timeout, health_check_interval)
    if cluster:
        if max_connections is not None:
            options["max_connections"] = max_connections
        return AsyncRedisCluster.from_url(url, retry=_cluster_retry(True), **options)
    if max_connections is not None:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_timeout,
                                                        **options)
        return aioredis.Redis.from_pool(pool)
    return aioredis.Redis.from_url(url, **options)


def sync_client(url: str, cluster: bool, *, socket_timeout: float | None = None,
                socket_connect_timeout: float | None = 2.0, health_check_interval: float = 0,
                single_connection: bool = False) -> SyncClient:
    """A synchronous client of `url`; `single_connection` for a one-thread loop on one Redis (a
    cluster client holds a pool per node). A cluster client reads the cluster's slots as it is
    made: it raises one of REDIS_ERRORS when no node answers, so make it where a retry follows."""
    options = _options(socket_timeout, socket_connect_timeout, health_check_interval)
    if cluster:
        return RedisCluster.from_url(url, retry=_cluster_retry(False), **options)
    if single_connection:
        options["single_connection_client"] = True
    return redis.Redis.from_url(url, **options)


def publish(client: Any, channel: str, message: bytes | str) -> Any:
    """PUBLISH, or SPUBLISH on a cluster (routed to the master of the channel's slot), on any client
    or pipeline: what the client's `publish` returns (the receivers, an awaitable of them, the pipeline)."""
    if is_cluster(client):
        return client.spublish(channel, message)
    return client.publish(channel, message)


def publish_all(client: SyncClient, messages: Sequence[tuple[str, bytes | str]]) -> None:
    """Publish each (channel, message) in one round trip: a lone command for one, a pipeline (not a
    transaction) for more, which on a cluster sends each SPUBLISH to its channel's master."""
    if len(messages) == 1:
        publish(client, *messages[0])
    elif messages:
        pipe = client.pipeline(transaction=False)
        for channel, message in messages:
            publish(pipe, channel, message)
        pipe.execute()


def subscriber_count(client: SyncClient, channel: str) -> int:
    """The subscribers of `channel`: PUBSUB NUMSUB, or on a cluster PUBSUB SHARDNUMSUB asked of the
    master of the channel's slot (the one that counts them)."""
    if isinstance(client, RedisCluster):
        counts = client.pubsub_shardnumsub(channel, target_nodes=client.get_node_from_key(channel))
    else:
        counts = client.pubsub_numsub(channel)
    return dict(counts).get(channel.encode(), 0)


def subscription(client: SyncClient) -> "redis.client.PubSub | ShardedSubscription":
    """A pub/sub of `client` with PubSub's methods (subscribe, get_message, ping, unsubscribe,
    close, subscribed); on a cluster, sharded (ShardedSubscription). Subscribe messages are ignored."""
    if isinstance(client, RedisCluster):
        return ShardedSubscription(client)
    return client.pubsub(ignore_subscribe_messages=True)


def async_subscription(client: AsyncClient) -> "aioredis.client.PubSub | AsyncShardedSubscription":
    """The asyncio `subscription`: subscribe, get_message, ping, unsubscribe and aclose are awaited."""
    if isinstance(client, AsyncRedisCluster):
        return AsyncShardedSubscription(client)
    return client.pubsub(ignore_subscribe_messages=True)


class SubscriptionMoved(ConnectionError):
    """A node ended a sharded subscription by itself (its slot moved to another master): subscribe again."""


def text(value: bytes | str) -> str:
    """A reply's member, channel or name as text: clients made without decode_responses give bytes."""
    return value.decode() if isinstance(value, bytes) else value


def _shard_message(message: dict[str, Any] | None, unsubscribing: set[str]) -> dict[str, Any] | None:
    """A node's pub/sub message as PubSub's callers know it: `smessage` is `message`, confirmations
    are dropped; an SUNSUBSCRIBE nobody asked for raises SubscriptionMoved."""
    if message is None:
        return None
    kind = message["type"]
    if kind == "smessage":
        return dict(message, type="message")
    if kind == "sunsubscribe":
        channel = text(message["channel"])
        if channel not in unsubscribing:
            raise SubscriptionMoved(f"the node serving {channel} unsubscribed it (its slot moved)")
        unsubscribing.discard(channel)
        return None
    if kind == "ssubscribe":
        return None
    return message  # a pong


@dataclass
class _AsyncNode:
    """One master's share of a sharded subscription: its own connection, its reader task, its probe."""

    client: aioredis.Redis
    pubsub: aioredis.client.PubSub
    probe: SubscriptionProbe
    reading: asyncio.Task | None = None


class AsyncShardedSubscription:
    """SSUBSCRIBE on the master of each channel's slot, with the asyncio PubSub's methods.

    redis-py's ClusterPubSub hides a node that fails while others answer, and splits one read's
    wait over the nodes, so a reply on one waits out the others' share. The parts need the
    opposite: any node lost is an error (the caller subscribes again, and says that messages may
    have been missed), and a message is read as it comes. So each node has its own connection and
    reader task, and its own probe (a PING when it has been quiet, SubscriptionDead when unanswered):
    one node's traffic proves nothing about another's connection. Each subscription reads the
    cluster's slots anew, so one made after a failover goes to the new masters.
    """

    def __init__(self, client: AsyncRedisCluster, probe_interval: float = PROBE_INTERVAL,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        self._client = client
        self._nodes: dict[str, _AsyncNode] = {}
        self._unsubscribing: set[str] = set()
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._refreshed = False

    @property
    def subscribed(self) -> bool:
        return any(node.pubsub.subscribed for node in self._nodes.values())

    async def subscribe(self, *channels: str) -> None:
        await self._refresh_slots()
        for channel in channels:
            node = await self._node_of(channel)
            # One channel a command: SSUBSCRIBE refuses channels of several slots (CROSSSLOT).
            await node.pubsub.ssubscribe(channel)

    async def unsubscribe(self, *channels: str) -> None:
        for node in self._nodes.values():
            mine = [channel for channel in channels if channel.encode() in node.pubsub.shard_channels]
            for channel in mine:
                self._unsubscribing.add(channel)
                await node.pubsub.sunsubscribe(channel)

    async def ping(self, message: bytes | None = None) -> None:
        for node in self._nodes.values():
            await node.pubsub.ping(message)

    async def get_message(self, ignore_subscribe_messages: bool = True, timeout: float = 0.0) -> dict[str, Any] | None:
        """The next message of any node within `timeout` seconds, or None; raises what a node's
        read raised, or SubscriptionDead when a node left its probe unanswered."""
        if not self._nodes:
            await asyncio.sleep(timeout)
            return None
        await self._probe_nodes()
        for node in self._nodes.values():
            if node.reading is None:
                node.reading = asyncio.create_task(node.pubsub.get_message(timeout=NODE_READ_SLICE))
        readings = {node.reading: node for node in self._nodes.values() if node.reading is not None}
        done, _ = await asyncio.wait(readings, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        # One reading at a time: the others that finished stay done, for the next call.
        for task in done:
            node = readings[task]
            node.reading = None
            message = task.result()
            if message is not None:
                node.probe.heard(asyncio.get_running_loop().time())
            return _shard_message(message, self._unsubscribing)
        return None

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            if node.reading is not None:
                node.reading.cancel()
        for node in nodes:
            if node.reading is not None:
                await asyncio.gather(node.reading, return_exceptions=True)
            with closing_quietly(logger, "closing a node's sharded subscription"):
                await node.pubsub.aclose()
            with closing_quietly(logger, "closing a node's sharded subscription client"):
                await node.client.aclose()

    async def _probe_nodes(self) -> None:
        now = asyncio.get_running_loop().time()
        for node in self._nodes.values():
            if node.probe.ping_due(now):  # raises SubscriptionDead when one went unanswered
                await node.pubsub.ping(PROBE_MESSAGE)

    async def _refresh_slots(self) -> None:
        if not self._refreshed:
            self._refreshed = True
            await self._client.initialize()  # the first command of a new client: reads the slots
            await self._client.nodes_manager.initialize()  # read again, for a client that knew them

    async def _node_of(self, channel: str) -> _AsyncNode:
        cluster_node = self._client.get_node_from_key(channel)
        if cluster_node is None:
            raise RedisClusterException(f"no node serves the slot of {channel}")
        node = self._nodes.get(cluster_node.name)
        if node is None:
            # A connection of its own, from the node's settings (address, credentials, TLS), with no
            # read timeout: it blocks reading on purpose, for at most NODE_READ_SLICE a read.
            kwargs = dict(cluster_node.connection_kwargs, socket_timeout=None, retry=_NO_ASYNC_RETRY)
            pool = aioredis.ConnectionPool(connection_class=cluster_node.connection_class, max_connections=1,
                                           **kwargs)
            client = aioredis.Redis.from_pool(pool)
            node = _AsyncNode(client, client.pubsub(), SubscriptionProbe(
                asyncio.get_running_loop().time(), self._probe_interval, self._probe_timeout))
            self._nodes[cluster_node.name] = node
        return node


@dataclass
class _SyncNode:
    client: redis.Redis
    pubsub: redis.client.PubSub
    probe: SubscriptionProbe


class ShardedSubscription:
    """The synchronous AsyncShardedSubscription, for a loop that reads one topic (a worker's): with
    several nodes, each is read in turn for at most SYNC_NODE_SLICE."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        self._nodes: dict[str, _SyncNode] = {}
        self._unsubscribing: set[str] = set()
        self._turn = 0
        self._refreshed = False

    @property
    def subscribed(self) -> bool:
        return any(node.pubsub.subscribed for node in self._nodes.values())

    def subscribe(self, *channels: str) -> None:
        if not self._refreshed:
            self._refreshed = True
            self._client.nodes_manager.initialize()
        for channel in channels:
            self._node_of(channel).pubsub.ssubscribe(channel)

    def unsubscribe(self, *channels: str) -> None:
        for node in self._nodes.values():
            for channel in [channel for channel in channels if channel.encode() in node.pubsub.shard_channels]:
                self._unsubscribing.add(channel)
                node.pubsub.sunsubscribe(channel)

    def ping(self, message: bytes | None = None) -> None:
        for node in self._nodes.values():
            node.pubsub.ping(message)

    def get_message(self, ignore_subscribe_messages: bool = True, timeout: float = 0.0) -> dict[str, Any] | None:
        nodes = list(self._nodes.values())
        if not nodes:
            time.sleep(timeout)
            return None
        now = time.monotonic()
        for node in nodes:
            if node.probe.ping_due(now):
                node.pubsub.ping(PROBE_MESSAGE)
        deadline = now + timeout
        while True:
            node = nodes[self._turn % len(nodes)]
            self._turn += 1
            wait = max(0.0, deadline - time.monotonic())
            message = node.pubsub.get_message(timeout=wait if len(nodes) == 1 else min(wait, SYNC_NODE_SLICE))
            if message is not None:
                node.probe.heard(time.monotonic())
                return _shard_message(message, self._unsubscribing)
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            with closing_quietly(logger, "closing a node's sharded subscription"):
                node.pubsub.close()
            with closing_quietly(logger, "closing a node's sharded subscription client"):
                node.client.close()

    def _node_of(self, channel: str) -> _SyncNode:
        cluster_node = self._client.get_node_from_key(channel)
        if cluster_node is None:
            raise RedisClusterException(f"no node serves the slot of {channel}")
        node = self._nodes.get(cluster_node.name)
        if node is None:
            settings = cluster_node.redis_connection.connection_pool
            kwargs = dict(settings.connection_kwargs, socket_timeout=None, retry=_NO_RETRY)
            pool = redis.ConnectionPool(connection_class=settings.connection_class, max_connections=1, **kwargs)
            client = redis.Redis(connection_pool=pool)
            node = _SyncNode(client, client.pubsub(), SubscriptionProbe(time.monotonic(), PROBE_INTERVAL,
                                                                        PROBE_TIMEOUT))
            self._nodes[cluster_node.name] = node
        return node
