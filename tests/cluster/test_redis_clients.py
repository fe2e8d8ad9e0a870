"""`websockets_gateway.redis_clients` on a real Redis Cluster: sharded publishes, their count, and
sharded subscriptions across masters that report every lost node instead of hiding it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from scripts.cluster import LocalCluster
from websockets_gateway import redis_clients

# How long a test waits for a message that was published.
WAIT = 5.0


def _channels_on_two_masters(cluster: LocalCluster, prefix: str) -> tuple[str, str]:
    """Two channel names whose slots two different masters serve."""
    first = f"{prefix}-0"
    for number in itertools.count(1):
        other = f"{prefix}-{number}"
        if cluster.owner_port(other) != cluster.owner_port(first):
            return first, other
    raise AssertionError("unreachable")


async def _next_message(subscription, timeout: float = WAIT) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        message = await subscription.get_message(timeout=0.2)
        if message is not None and message["type"] == "message":
            return message
    raise AssertionError(f"no message within {timeout}s")


def test_an_asyncio_sharded_subscription_hears_channels_of_two_masters(local_cluster):
    first, second = _channels_on_two_masters(local_cluster, "two-masters")

    async def scenario():
        subscriber = redis_clients.async_client(local_cluster.url, True, health_check_interval=10)
        publisher = redis_clients.async_client(local_cluster.url, True, socket_timeout=2)
        subscription = redis_clients.async_subscription(subscriber)
        try:
            await subscription.subscribe(first, second)
            assert subscription.subscribed
            # SPUBLISH to the master of each channel's slot counts the one sharded subscriber there.
            assert await redis_clients.publish(publisher, second, b"to the second") == 1
            assert await redis_clients.publish(publisher, first, b"to the first") == 1
            heard = {(await _next_message(subscription))["data"] for _ in range(2)}
            assert heard == {b"to the first", b"to the second"}
            # In a pipeline too, each SPUBLISH goes to its channel's master.
            pipe = publisher.pipeline(transaction=False)
            redis_clients.publish(pipe, first, b"piped 1")
            redis_clients.publish(pipe, second, b"piped 2")
            assert await pipe.execute() == [1, 1]
            heard = {(await _next_message(subscription))["data"] for _ in range(2)}
            assert heard == {b"piped 1", b"piped 2"}
            await subscription.unsubscribe(first, second)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while subscription.subscribed and loop.time() < deadline:
                await subscription.get_message(timeout=0.1)
            assert not subscription.subscribed
        finally:
            await subscription.aclose()
            await subscriber.aclose()
            await publisher.aclose()

    asyncio.run(scenario())


def test_a_master_that_goes_away_is_an_error_of_the_subscription_not_hidden(local_cluster):
    first, second = _channels_on_two_masters(local_cluster, "lost-master")
    victim = local_cluster.owner_port(second)

    async def scenario():
        subscriber = redis_clients.async_client(local_cluster.url, True)
        subscription = redis_clients.async_subscription(subscriber)
        try:
            await subscription.subscribe(first, second)
            await asyncio.to_thread(local_cluster.stop_node, victim)
            # The other master still answers; the lost one is reported all the same.
            with pytest.raises(redis_clients.REDIS_ERRORS):
                for _ in range(50):
                    await subscription.get_message(timeout=0.1)
        finally:
            await subscription.aclose()
            await asyncio.to_thread(local_cluster.start_node, victim)
        # Subscribed again (the slots read anew), it hears the master that came back.
        subscription = redis_clients.async_subscription(subscriber)
        publisher = redis_clients.async_client(local_cluster.url, True, socket_timeout=2)
        try:
            await subscription.subscribe(first, second)
            assert await redis_clients.publish(publisher, second, b"back") == 1
            assert (await _next_message(subscription))["data"] == b"back"
        finally:
            await subscription.aclose()
            await subscriber.aclose()
            await publisher.aclose()

    asyncio.run(scenario())


def test_the_sync_sharded_subscription_of_a_worker_topic(local_cluster):
    client = redis_clients.sync_client(local_cluster.url, True, socket_timeout=2)
    subscription = redis_clients.subscription(client)
    try:
        assert redis_clients.subscriber_count(client, "sync-topic") == 0
        subscription.subscribe("sync-topic")
        # Counted by PUBSUB SHARDNUMSUB on the master of its slot (asked of any other, it is 0).
        assert redis_clients.subscriber_count(client, "sync-topic") == 1
        assert redis_clients.publish(client, "sync-topic", b"request") == 1
        message = None
        for _ in range(50):
            message = subscription.get_message(timeout=0.1)
            if message is not None:
                break
        assert message is not None and message["type"] == "message" and message["data"] == b"request"
        subscription.ping(b"probe")
        pong = None
        for _ in range(50):
            pong = subscription.get_message(timeout=0.1)
            if pong is not None:
                break
        assert pong == {"type": "pong", "pattern": None, "channel": None, "data": b"probe"}
        subscription.unsubscribe("sync-topic")
        for _ in range(50):
            if not subscription.subscribed:
                break
            subscription.get_message(timeout=0.1)
        assert not subscription.subscribed
        assert redis_clients.subscriber_count(client, "sync-topic") == 0
    finally:
        subscription.close()
        client.close()


@pytest.fixture
def own_cluster(local_cluster, tmp_path) -> Iterator[LocalCluster]:
    """A cluster of this test's own, since it moves a slot (after `local_cluster`: skipped alike)."""
    cluster = LocalCluster.start(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_slot_that_moves_ends_the_subscription_and_the_next_one_goes_to_the_new_master(own_cluster):
    channel = "moving-topic"
    old_owner = own_cluster.owner_port(channel)
    new_owner = next(port for port in own_cluster.ports if port != old_owner)
    with own_cluster.node(old_owner) as node:
        slot = int(node.execute_command("CLUSTER KEYSLOT", channel))
    with own_cluster.node(new_owner) as node:
        new_id = node.execute_command("CLUSTER MYID")

    async def scenario():
        subscriber = redis_clients.async_client(own_cluster.url, True)
        publisher = redis_clients.async_client(own_cluster.url, True, socket_timeout=2)
        subscription = redis_clients.async_subscription(subscriber)
        try:
            await subscription.subscribe(channel)
            for port in own_cluster.ports:
                with own_cluster.node(port) as node:
                    node.execute_command("CLUSTER SETSLOT", slot, "NODE", new_id)
            with pytest.raises(redis_clients.SubscriptionMoved, match=channel):
                for _ in range(50):
                    await subscription.get_message(timeout=0.1)
        finally:
            await subscription.aclose()
        subscription = redis_clients.async_subscription(subscriber)
        try:
            await subscription.subscribe(channel)
            assert await redis_clients.publish(publisher, channel, b"on the new master") == 1
            assert (await _next_message(subscription))["data"] == b"on the new master"
            with own_cluster.node(new_owner) as node:
                assert dict(node.execute_command("PUBSUB SHARDNUMSUB", channel))[channel.encode()] == 1
        finally:
            await subscription.aclose()
            await subscriber.aclose()
            await publisher.aclose()

    asyncio.run(scenario())
