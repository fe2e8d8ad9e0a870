"""`websockets_gateway.redis_clients` without a cluster: which client each setting makes, which
command a publish sends, how a shard's messages read; tests/cluster/test_redis_clients.py runs
the sharded subscriptions on a real cluster."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from websockets_gateway import redis_clients

# How long a test waits for what must come.
WAIT = 5.0


def test_one_redis_makes_the_plain_clients_with_the_options_asked_for(monkeypatch):
    client = redis_clients.sync_client("redis://127.0.0.1:1/0", False, socket_timeout=3)
    assert type(client) is redis.Redis and not redis_clients.is_cluster(client)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 3
    assert isinstance(redis_clients.subscription(client), redis.client.PubSub)
    client.close()
    made: list[dict] = []
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **options: made.append(options)))
    redis_clients.sync_client("redis://127.0.0.1:1/0", False, socket_timeout=5, health_check_interval=10,
                              single_connection=True)
    assert made == [{"socket_timeout": 5, "socket_connect_timeout": 2.0, "health_check_interval": 10,
                     "single_connection_client": True}]

    async def scenario():
        publisher = redis_clients.async_client("redis://127.0.0.1:1/0", False, max_connections=7, pool_timeout=1.5)
        assert isinstance(publisher.connection_pool, aioredis.BlockingConnectionPool)
        assert publisher.connection_pool.max_connections == 7
        subscriber = redis_clients.async_client("redis://127.0.0.1:1/0", False, health_check_interval=10)
        assert subscriber.connection_pool.connection_kwargs["health_check_interval"] == 10
        await publisher.aclose()
        await subscriber.aclose()

    asyncio.run(scenario())


def test_a_cluster_makes_the_cluster_clients_lazily_in_asyncio():
    async def scenario():
        # No node answers here: an asyncio cluster client connects at its first command only.
        client = redis_clients.async_client("redis://127.0.0.1:1/0", True, socket_timeout=2, max_connections=9)
        assert isinstance(client, AsyncRedisCluster) and redis_clients.is_cluster(client)
        assert redis_clients.is_cluster(client.pipeline(transaction=False))
        assert isinstance(redis_clients.async_subscription(client), redis_clients.AsyncShardedSubscription)
        with pytest.raises(redis_clients.REDIS_ERRORS):
            await client.ping()
        await client.aclose()

    asyncio.run(scenario())


def test_a_sync_cluster_client_that_finds_no_node_raises_one_of_the_redis_errors():
    with pytest.raises(redis_clients.REDIS_ERRORS):
        redis_clients.sync_client("redis://127.0.0.1:1/0", True, socket_connect_timeout=0.5)


def test_publish_and_count_on_one_redis_are_publish_and_numsub():
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    subscriber = fakeredis.FakeRedis(server=server).pubsub()
    subscriber.subscribe("topic")
    assert redis_clients.subscriber_count(client, "topic") == 1
    assert redis_clients.publish(client, "topic", b"one") == 1
    pipe = client.pipeline(transaction=False)
    redis_clients.publish(pipe, "topic", b"two")
    redis_clients.publish(pipe, "other", b"three")
    assert pipe.execute() == [1, 0]
    subscriber.close()
    client.close()


class Recorder:
    """Records which publish command a client was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def publish(self, channel: str, message: bytes) -> str:
        self.calls.append(("publish", channel))
        return "publish"

    def spublish(self, channel: str, message: bytes) -> str:
        self.calls.append(("spublish", channel))
        return "spublish"


def test_a_cluster_client_publishes_sharded(monkeypatch):
    plain = Recorder()
    assert redis_clients.publish(plain, "topic", b"x") == "publish"
    monkeypatch.setattr(redis_clients, "is_cluster", lambda client: True)
    assert redis_clients.publish(plain, "topic", b"x") == "spublish"


@pytest.mark.parametrize("value, cluster", [("1", True), ("True", True), ("yes", True), ("ON", True),
                                            ("0", False), ("false", False), ("no", False), ("", False)])
def test_cluster_from_env(value, cluster):
    assert redis_clients.cluster_from_env({"REDIS_CLUSTER": value}) is cluster
    assert redis_clients.cluster_from_env({}) is False


def test_cluster_from_env_refuses_what_is_not_a_boolean():
    with pytest.raises(ValueError, match="REDIS_CLUSTER='maybe' is not a boolean"):
        redis_clients.cluster_from_env({"REDIS_CLUSTER": "maybe"})


def test_a_shards_messages_read_as_pubsub_messages():
    unsubscribing = {"asked"}
    message = {"type": "smessage", "pattern": None, "channel": b"topic", "data": b"reply"}
    assert redis_clients._shard_message(message, unsubscribing) == dict(message, type="message")
    assert redis_clients._shard_message({"type": "ssubscribe", "channel": b"topic", "data": 1}, unsubscribing) is None
    pong = {"type": "pong", "pattern": None, "channel": None, "data": b"probe"}
    assert redis_clients._shard_message(pong, unsubscribing) == pong
    assert redis_clients._shard_message(None, unsubscribing) is None
    # An SUNSUBSCRIBE we sent is confirmed quietly; one we did not is the node giving the slot up.
    assert redis_clients._shard_message({"type": "sunsubscribe", "channel": b"asked", "data": 0}, unsubscribing) is None
    assert unsubscribing == set()
    with pytest.raises(redis_clients.SubscriptionMoved, match="topic"):
        redis_clients._shard_message({"type": "sunsubscribe", "channel": b"topic", "data": 0}, unsubscribing)


class BlockingPublisher:
    """A client whose publishes wait until released: holds every publish slot."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.published = 0

    async def publish(self, channel: str, message: bytes) -> int:
        await self.release.wait()
        self.published += 1
        return 1
