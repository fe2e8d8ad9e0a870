"""The gateway's Redis side: choosing a live worker topic, publishing requests, the reply subscriber.

Redis is fakeredis's in-process server, shared by the publisher, the subscriber and the fake workers.
"""

from __future__ import annotations

import asyncio
import json
import random

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway import bus as bus_module
from websockets_gateway.bus import Bus, BusUnavailable, NoWorkerAvailable, WorkerTopics
from websockets_gateway.metrics import GatewayMetrics

from .fakes import WAIT, FakeClock, FakeWorker, RoundTripRedis, fake_blocking_pool, run


class InOrder:
    """An rng whose shuffle keeps the order, so the tests can tell live from dead by position."""

    def __init__(self):
        self.shuffled = []

    def shuffle(self, items):
        self.shuffled.append(list(items))


# WorkerTopics

def test_candidates_are_all_topics_when_all_are_live():
    topics = WorkerTopics(["a", "b", "c"], rng=InOrder(), clock=FakeClock())
    assert topics.candidates() == ["a", "b", "c"]


def test_live_candidates_are_shuffled():
    topics = WorkerTopics(["a", "b", "c", "d"], rng=random.Random(1234), clock=FakeClock())
    orders = {tuple(topics.candidates()) for _ in range(50)}
    assert all(sorted(order) == ["a", "b", "c", "d"] for order in orders)
    assert len(orders) > 1


def test_dead_topics_come_last():
    clock = FakeClock()
    topics = WorkerTopics(["a", "b", "c", "d"], retry_after=1.0, rng=random.Random(7), clock=clock)
    topics.mark_dead("b")
    topics.mark_dead("c")
    for _ in range(30):
        candidates = topics.candidates()
        assert set(candidates[:2]) == {"a", "d"}
        assert set(candidates[2:]) == {"b", "c"}


def test_dead_topics_are_shuffled_among_themselves():
    rng = InOrder()
    topics = WorkerTopics(["a", "b", "c"], rng=rng, clock=FakeClock())
    topics.mark_dead("a")
    topics.mark_dead("c")
    assert topics.candidates() == ["b", "a", "c"]
    assert rng.shuffled == [["b"], ["a", "c"]]


def test_a_dead_topic_is_live_again_after_retry_after():
    clock = FakeClock()
    topics = WorkerTopics(["a", "b"], retry_after=1.0, rng=InOrder(), clock=clock)
    topics.mark_dead("a")
    assert topics.candidates() == ["b", "a"]
    clock.advance(0.999)
    assert topics.candidates() == ["b", "a"]
    clock.advance(0.001)
    assert topics.candidates() == ["a", "b"]


def test_mark_alive_ends_the_penalty_at_once():
    topics = WorkerTopics(["a", "b"], retry_after=60.0, rng=InOrder(), clock=FakeClock())
    topics.mark_dead("a")
    topics.mark_alive("a")
    topics.mark_alive("never-dead")
    assert topics.candidates() == ["a", "b"]


def test_a_dead_topic_due_for_a_probe_goes_first_to_one_caller_only():
    clock = FakeClock()
    topics = WorkerTopics(["a", "b", "c"], retry_after=1.0, rng=InOrder(), clock=clock)
    topics.mark_dead("a")
    clock.advance(1.0)
    assert topics.candidates() == ["a", "b", "c"]  # the probe
    # While that probe is on its way, everyone else still avoids the topic.
    for _ in range(5):
        assert topics.candidates() == ["b", "c", "a"]
    clock.advance(0.999)
    assert topics.candidates() == ["b", "c", "a"]
    # The next probe, a period later, if the first one never came back.
    clock.advance(0.001)
    assert topics.candidates() == ["a", "b", "c"]
    assert topics.candidates() == ["b", "c", "a"]


def test_a_probe_that_finds_a_subscriber_makes_the_topic_live_for_everyone():
    clock = FakeClock()
    topics = WorkerTopics(["a", "b"], retry_after=1.0, rng=InOrder(), clock=clock)
    topics.mark_dead("a")
    clock.advance(1.0)
    assert topics.candidates()[0] == "a"
    topics.mark_alive("a")
    assert topics.candidates() == ["a", "b"]
    assert topics.candidates() == ["a", "b"]


def test_every_topic_dead_still_yields_every_topic():
    topics = WorkerTopics(["a", "b"], rng=InOrder(), clock=FakeClock())
    topics.mark_dead("a")
    topics.mark_dead("b")
    assert sorted(topics.candidates()) == ["a", "b"]


# Bus with fakeredis

def _bus(server, topics=("w1", "w2"), on_reply=lambda data: None, publisher=None, subscriber=None,
         on_resubscribed=None, clock=None):
    bus = Bus(
        "redis://unused:6379/0",
        topics,
        response_topic="worker_response_test",
        reply_topic="gateway_reply:gw-test",
        on_reply=on_reply,
        publish_timeout=1.0,
        on_resubscribed=on_resubscribed,
        publisher=publisher or fakeredis.FakeAsyncRedis(server=server),
        subscriber=subscriber or fakeredis.FakeAsyncRedis(server=server),
    )
    bus.topics = WorkerTopics(topics, rng=InOrder(), clock=clock or FakeClock())
    return bus


def test_publish_request_goes_to_the_topic_with_a_subscriber_and_marks_the_others_dead():
    async def scenario():
        server = fakeredis.FakeServer()
        bus = _bus(server, topics=("w1", "w2", "w3"))
        request = {"uuid": "u1", "action": "ping", "request_id": "gw-test:1", "text": "héllo"}
        async with FakeWorker(server, topic="w2") as worker:
            assert await bus.publish_request(request) == "w2"
            await worker.wait_for_requests(1)
            assert worker.requests == [request]
            # w1 had no subscriber: it is now tried last; w3 was never tried.
            assert bus.topics.candidates() == ["w2", "w3", "w1"]
        await bus.close()

    run(scenario())


def test_publish_request_prefers_a_live_topic_next_time():
    async def scenario():
        server = fakeredis.FakeServer()
        bus = _bus(server, topics=("w1", "w2"))
        async with FakeWorker(server, topic="w2") as worker:
            for i in range(3):
                assert await bus.publish_request({"uuid": str(i)}) == "w2"
            await worker.wait_for_requests(3)
            assert [request["uuid"] for request in worker.requests] == ["0", "1", "2"]
        await bus.close()

    run(scenario())


def test_no_worker_available_when_no_topic_has_a_subscriber():
    async def scenario():
        server = fakeredis.FakeServer()
        bus = _bus(server, topics=("w1", "w2"))
        with pytest.raises(NoWorkerAvailable):
            await bus.publish_request({"uuid": "u1"})
        assert bus.topics.dead == {"w1", "w2"}
        await bus.close()

    run(scenario())


def test_a_worker_that_comes_back_is_found_again():
    async def scenario():
        server = fakeredis.FakeServer()
        bus = _bus(server, topics=("w1",))
        with pytest.raises(NoWorkerAvailable):
            await bus.publish_request({"uuid": "u1"})
        async with FakeWorker(server, topic="w1"):
            assert await bus.publish_request({"uuid": "u2"}) == "w1"
        assert "w1" not in bus.topics.dead
        await bus.close()

    run(scenario())


def test_requests_publishing_while_a_dead_topic_is_probed_do_not_probe_it_too():
    async def scenario():
        server = fakeredis.FakeServer()
        publisher = RoundTripRedis(server)
        publisher.gate = asyncio.Event()
        clock = FakeClock()
        bus = _bus(server, topics=("w1", "w2"), publisher=publisher, clock=clock)
        async with FakeWorker(server, topic="w2") as worker:
            bus.topics.mark_dead("w1")
            clock.advance(bus.topics.retry_after)
            probe = asyncio.create_task(bus.publish_request({"uuid": "probe"}))
            await asyncio.wait_for(publisher.recorded.wait(), WAIT)
            # Requests arriving while the probe is on its way to Redis pick the live topic; they
            # wait for the probe's round trip and then share the next one.
            others = [asyncio.create_task(bus.publish_request({"uuid": f"other-{n}"})) for n in range(5)]
            await asyncio.sleep(0)
            publisher.gate.set()
            assert await asyncio.wait_for(asyncio.gather(*others), WAIT) == ["w2"] * 5
            assert await asyncio.wait_for(probe, WAIT) == "w2"
            await worker.wait_for_requests(6)
        topics = [channel for round_trip in publisher.round_trips for _, channel in round_trip]
        assert topics.count("w1") == 1
        # The probe found no one: the topic is dead for another period.
        assert bus.topics.candidates() == ["w2", "w1"]
        await bus.close()

    run(scenario())


class BrokenRedis:
    async def execute_command(self, *args):
        raise RedisConnectionError("Connection refused")

    async def publish(self, channel, message):
        raise RedisConnectionError("Connection refused")

    def pipeline(self, transaction=True):
        return self

    async def ping(self):
        raise RedisConnectionError("Connection refused")

    async def aclose(self):
        pass


def test_publish_request_raises_bus_unavailable_when_redis_fails():
    async def scenario():
        server = fakeredis.FakeServer()
        bus = _bus(server, publisher=BrokenRedis())
        with pytest.raises(BusUnavailable, match="Connection refused"):
            await bus.publish_request({"uuid": "u1"})
        await bus.close()

    run(scenario())


def test_ping():
    async def scenario():
        server = fakeredis.FakeServer()
        assert await _bus(server).ping() is True
        assert await _bus(server, publisher=BrokenRedis()).ping() is False

    run(scenario())


async def _start_subscriber(bus):
    task = asyncio.create_task(bus.run_subscriber())
    await asyncio.wait_for(bus.subscribed.wait(), WAIT)
    return task


async def _stop(task):
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()


def test_run_subscriber_delivers_replies_from_both_topics():
    async def scenario():
        server = fakeredis.FakeServer()
        received = []
        got_two = asyncio.Event()

        def on_reply(data):
            received.append(json.loads(data))
            if len(received) == 2:
                got_two.set()

        bus = _bus(server, on_reply=on_reply)
        assert not bus.subscribed.is_set()
        task = await _start_subscriber(bus)

        worker = fakeredis.FakeAsyncRedis(server=server)
        assert await worker.publish(bus.reply_topic, json.dumps({"to": "requester"})) == 1
        assert await worker.publish(bus.response_topic, json.dumps({"to": "everyone"})) == 1
        assert await worker.publish("some_other_topic", json.dumps({"to": "nobody"})) == 0
        await asyncio.wait_for(got_two.wait(), WAIT)
        assert received == [{"to": "requester"}, {"to": "everyone"}]

        await _stop(task)
        assert not bus.subscribed.is_set()
        await worker.aclose()
        await bus.close()

    run(scenario())


@pytest.mark.parametrize("error", [KeyError("response"), RuntimeError("unexpected")], ids=["key-error", "runtime-error"])
def test_a_reply_that_breaks_routing_does_not_stop_the_subscriber(caplog, error):
    async def scenario():
        server = fakeredis.FakeServer()
        delivered = []
        second = asyncio.Event()

        def on_reply(data):
            if data == b"poison":
                raise error
            delivered.append(data)
            second.set()

        bus = _bus(server, on_reply=on_reply)
        task = await _start_subscriber(bus)
        worker = fakeredis.FakeAsyncRedis(server=server)
        await worker.publish(bus.reply_topic, "poison")
        await worker.publish(bus.reply_topic, "fine")
        await asyncio.wait_for(second.wait(), WAIT)
        assert delivered == [b"fine"]
        assert not task.done()
        await _stop(task)
        await worker.aclose()

    run(scenario())
    assert "could not route a reply" in caplog.text
    assert "Traceback" in caplog.text


class FailingSubscriber:
    """A subscriber client whose first `failures` subscriptions fail in `method` with `error`: at
    `subscribe`, as while Redis restarts; at the first read (`get_message`) of one that was made,
    with a Redis error as when Redis goes away, or any other (a bug, a client library's surprise)."""

    def __init__(self, server, error: Exception, method: str = "get_message", failures: int = 1):
        self.client = fakeredis.FakeAsyncRedis(server=server)
        self.error, self.method, self.failures = error, method, failures
        self.attempts = 0

    def pubsub(self, **kwargs):
        self.attempts += 1
        pubsub = self.client.pubsub(**kwargs)
        if self.attempts <= self.failures:
            async def failing(*args, **kwargs):
                raise self.error

            setattr(pubsub, self.method, failing)
        return pubsub

    async def aclose(self):
        await self.client.aclose()


async def _delivers_after_resubscribing(server, bus: Bus, subscriber: FailingSubscriber, delivered: asyncio.Event):
    """Wait for the bus's second subscription, then see a reply published to it delivered."""
    while subscriber.attempts < 2 or not bus.subscribed.is_set():
        await asyncio.sleep(0.01)
    publisher = fakeredis.FakeAsyncRedis(server=server)
    await publisher.publish(bus.reply_topic, "{}")
    await asyncio.wait_for(delivered.wait(), WAIT)
    await publisher.aclose()


def test_an_unexpected_exception_in_the_subscriber_is_logged_and_it_subscribes_again(monkeypatch, caplog):
    monkeypatch.setattr(bus_module, "RECONNECT_BACKOFF_FIRST", 0.01)

    async def scenario():
        server = fakeredis.FakeServer()
        delivered = asyncio.Event()
        subscriber = FailingSubscriber(server, RuntimeError("unexpected in get_message"))
        bus = _bus(server, subscriber=subscriber, on_reply=lambda data: delivered.set())
        bus.metrics = GatewayMetrics("gw-test")
        task = await _start_subscriber(bus)
        await _delivers_after_resubscribing(server, bus, subscriber, delivered)
        assert not task.done()
        assert bus.metrics.registry.get_sample_value(
            "chat_gateway_bus_errors_total", {"gateway_id": "gw-test", "kind": "subscriber_failed"}) == 1
        await _stop(task)
        await bus.close()

    run(scenario())
    assert "reply subscriber failed unexpectedly" in caplog.text
    assert "RuntimeError: unexpected in get_message" in caplog.text


def test_run_subscriber_reconnects_after_a_redis_error(monkeypatch):
    monkeypatch.setattr(bus_module, "RECONNECT_BACKOFF_FIRST", 0.01)

    async def scenario():
        server = fakeredis.FakeServer()
        delivered = asyncio.Event()
        subscriber = FailingSubscriber(server, RedisConnectionError("Connection refused"), "subscribe", 2)
        bus = _bus(server, on_reply=lambda data: delivered.set(), subscriber=subscriber)
        bus.metrics = GatewayMetrics("gw-test")
        task = await _start_subscriber(bus)
        assert bus.reconnects == 2
        assert bus.metrics.registry.get_sample_value("chat_gateway_redis_reconnects_total",
                                                     {"gateway_id": "gw-test"}) == 2
        assert subscriber.attempts == 3
        publisher = fakeredis.FakeAsyncRedis(server=server)
        await publisher.publish(bus.reply_topic, "{}")
        await asyncio.wait_for(delivered.wait(), WAIT)
        await _stop(task)
        await publisher.aclose()
        await bus.close()

    run(scenario())


def test_a_subscription_back_after_a_gap_is_reported_once(monkeypatch):
    monkeypatch.setattr(bus_module, "RECONNECT_BACKOFF_FIRST", 0.01)

    async def scenario():
        server = fakeredis.FakeServer()
        gaps = []
        subscriber = FailingSubscriber(server, RedisConnectionError("Connection reset by peer"))
        bus = _bus(server, subscriber=subscriber, on_resubscribed=lambda: gaps.append(bus.subscribed.is_set()))
        task = await _start_subscriber(bus)
        publisher = fakeredis.FakeAsyncRedis(server=server)
        # Subscribed a first time, lost, subscribed again: one gap, reported once subscribed again.
        while subscriber.attempts < 2 or not bus.subscribed.is_set():
            await asyncio.sleep(0.01)
        assert gaps == [True]
        assert bus.reconnects == 1
        await _stop(task)
        await publisher.aclose()
        await bus.close()

    run(scenario())


def test_subscribing_late_at_start_up_is_no_gap(monkeypatch):
    # Nothing was ever delivered before the first subscription: no one can have missed anything.
    monkeypatch.setattr(bus_module, "RECONNECT_BACKOFF_FIRST", 0.01)

    async def scenario():
        server = fakeredis.FakeServer()
        gaps = []
        subscriber = FailingSubscriber(server, RedisConnectionError("Connection refused"), "subscribe", 2)
        bus = _bus(server, subscriber=subscriber, on_resubscribed=lambda: gaps.append(1))
        task = await _start_subscriber(bus)
        assert gaps == []
        await _stop(task)
        await bus.close()

    run(scenario())


def test_a_failing_resubscription_handler_is_logged_and_the_subscriber_goes_on(monkeypatch, caplog):
    monkeypatch.setattr(bus_module, "RECONNECT_BACKOFF_FIRST", 0.01)

    async def scenario():
        server = fakeredis.FakeServer()
        delivered = asyncio.Event()

        def broken():
            raise RuntimeError("handler bug")

        subscriber = FailingSubscriber(server, RedisConnectionError("Connection reset by peer"))
        bus = _bus(server, subscriber=subscriber, on_reply=lambda data: delivered.set(), on_resubscribed=broken)
        task = await _start_subscriber(bus)
        await _delivers_after_resubscribing(server, bus, subscriber, delivered)
        await _stop(task)
        await bus.close()

    run(scenario())
    assert "the resubscription handler failed" in caplog.text


def test_close_closes_both_clients():
    class Recording(BrokenRedis):
        closed = False

        async def aclose(self):
            self.closed = True

    async def scenario():
        publisher, subscriber = Recording(), Recording()
        bus = _bus(fakeredis.FakeServer(), publisher=publisher, subscriber=subscriber)
        await bus.close()
        assert publisher.closed and subscriber.closed

    run(scenario())


# The publisher's pool: bounded, and blocking for at most the publish timeout

def test_the_publisher_is_a_bounded_blocking_pool_waiting_at_most_the_publish_timeout():
    async def scenario():
        publisher = bus_module.publisher_client("redis://127.0.0.1:1/0", timeout=1.5)
        pool = publisher.connection_pool
        assert isinstance(pool, aioredis.BlockingConnectionPool)
        assert pool.max_connections == bus_module.PUBLISH_CONNECTIONS
        assert pool.timeout == 1.5
        assert pool.connection_kwargs["socket_timeout"] == 1.5
        await publisher.aclose()

    run(scenario())


def test_publishes_past_the_pools_connections_wait_for_one_instead_of_failing():
    async def scenario():
        server = fakeredis.FakeServer()
        pool = fake_blocking_pool(server, max_connections=2, timeout=WAIT)
        publisher = aioredis.Redis.from_pool(pool)
        async with FakeWorker(server, topic="w1") as worker:
            bus = _bus(server, topics=("w1",), publisher=publisher)
            # Both connections busy (as if two publishes were waiting on Redis).
            held = [await pool.get_connection(), await pool.get_connection()]
            publishes = [asyncio.create_task(bus.publish_request({"uuid": f"u{n}"})) for n in range(5)]
            await asyncio.sleep(0.05)
            assert not any(task.done() for task in publishes)  # queued, not refused
            for connection in held:
                await pool.release(connection)
            assert await asyncio.wait_for(asyncio.gather(*publishes), WAIT) == ["w1"] * 5
            await worker.wait_for_requests(5)
            assert sorted(request["uuid"] for request in worker.requests) == [f"u{n}" for n in range(5)]
            # Never more connections than the bound.
            assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
            await bus.close()

    run(scenario())


def test_a_publish_that_waits_past_the_pool_timeout_is_bus_unavailable():
    async def scenario():
        server = fakeredis.FakeServer()
        pool = fake_blocking_pool(server, max_connections=1, timeout=0.05)
        bus = _bus(server, topics=("w1",), publisher=aioredis.Redis.from_pool(pool))
        bus.metrics = GatewayMetrics("gw-test")
        held = await pool.get_connection()
        with pytest.raises(BusUnavailable, match="No connection available"):
            await bus.publish_request({"uuid": "u1"})
        assert bus.metrics.registry.get_sample_value(
            "chat_gateway_bus_errors_total", {"gateway_id": "gw-test", "kind": "redis_unavailable"}) == 1
        await pool.release(held)
        await bus.close()

    run(scenario())


class SilentSubscriber:
    """A subscriber client whose first subscription is made, then never hears anything again, its
    PINGs included: a connection that a partition cut without a reset reaching either end."""

    def __init__(self, server):
        self.client = fakeredis.FakeAsyncRedis(server=server)
        self.attempts = 0
        self.pings = 0

    def pubsub(self, **kwargs):
        self.attempts += 1
        pubsub = self.client.pubsub(**kwargs)
        if self.attempts == 1:
            async def nothing(*args, timeout=0.0, **kwargs):
                await asyncio.sleep(min(timeout or 0.0, 0.01))
                return None

            async def unanswered(*args, **kwargs):
                self.pings += 1

            pubsub.get_message, pubsub.ping = nothing, unanswered
        return pubsub

    async def aclose(self):
        await self.client.aclose()


def test_a_subscription_that_answers_no_probe_is_made_again_and_reported_as_a_gap(monkeypatch, caplog):
    monkeypatch.setattr(bus_module, "RECONNECT_BACKOFF_FIRST", 0.01)

    async def scenario():
        server = fakeredis.FakeServer()
        delivered, gaps = asyncio.Event(), []
        subscriber = SilentSubscriber(server)
        bus = _bus(server, subscriber=subscriber, on_reply=lambda data: delivered.set(),
                   on_resubscribed=lambda: gaps.append(1))
        bus.probe_interval, bus.probe_timeout = 0.05, 0.05
        task = await _start_subscriber(bus)

        async def subscribed_again():
            while subscriber.attempts < 2 or not bus.subscribed.is_set():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(subscribed_again(), WAIT)
        assert subscriber.pings == 1  # one probe, unanswered: the connection is given up
        assert bus.reconnects == 1 and gaps == [1]
        publisher = fakeredis.FakeAsyncRedis(server=server)
        await publisher.publish(bus.reply_topic, "{}")
        await asyncio.wait_for(delivered.wait(), WAIT)
        await publisher.aclose()
        await _stop(task)
        await bus.close()

    run(scenario())
    assert "no answer to a PING" in caplog.text


def test_a_quiet_subscription_that_answers_its_probes_is_kept(monkeypatch):
    async def scenario():
        server = fakeredis.FakeServer()
        pings = []
        subscriber = fakeredis.FakeAsyncRedis(server=server)
        pubsub_of = subscriber.pubsub

        def pubsub(**kwargs):
            made = pubsub_of(**kwargs)
            ping = made.ping

            async def counted(*args, **kw):
                pings.append(1)
                return await ping(*args, **kw)

            made.ping = counted
            return made

        subscriber.pubsub = pubsub
        bus = _bus(server, subscriber=subscriber)
        # The loop reads with a 1 s timeout: each quiet second is due a probe, answered at once.
        bus.probe_interval, bus.probe_timeout = 0.01, 0.5
        task = await _start_subscriber(bus)

        async def probed_three_times():
            while len(pings) < 3:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(probed_three_times(), 3 * (1.0 + WAIT))  # a probe a read, of 1 s each
        assert bus.reconnects == 0 and bus.subscribed.is_set()
        await _stop(task)
        await bus.close()

    run(scenario())


# Requests published in pipelines (batching.py)

def test_concurrent_requests_share_round_trips_and_fall_back_from_a_dead_topic_together():
    async def scenario():
        server = fakeredis.FakeServer()
        publisher = RoundTripRedis(server)
        bus = _bus(server, topics=("w1", "w2"), publisher=publisher)
        bus.metrics = GatewayMetrics("gw-test")
        async with FakeWorker(server, topic="w2") as worker:
            topics = await asyncio.wait_for(
                asyncio.gather(*(bus.publish_request({"uuid": f"u{n}"}) for n in range(20))), WAIT)
            assert topics == ["w2"] * 20
            await worker.wait_for_requests(20)
            assert sorted(request["uuid"] for request in worker.requests) == sorted(f"u{n}" for n in range(20))
        # All 20 tried w1 first (in order), found no one there, and went on to w2: two round trips.
        assert publisher.round_trips == [[("PUBLISH", "w1")] * 20, [("PUBLISH", "w2")] * 20]
        assert bus.topics.dead == {"w1"}
        assert bus.metrics.registry.get_sample_value(
            "chat_gateway_bus_publish_round_trips_total", {"gateway_id": "gw-test"}) == 2
        assert bus.metrics.registry.get_sample_value(
            "chat_gateway_bus_errors_total", {"gateway_id": "gw-test", "kind": "topic_without_worker"}) == 20
        await bus.close()

    run(scenario())


def test_a_failed_pipeline_is_bus_unavailable_for_each_of_its_requests():
    async def scenario():
        server = fakeredis.FakeServer()
        publisher = RoundTripRedis(server)
        publisher.failures[0] = RedisConnectionError("Connection reset by peer")
        bus = _bus(server, topics=("w1",), publisher=publisher)
        async with FakeWorker(server, topic="w1"):
            outcomes = await asyncio.wait_for(asyncio.gather(
                *(bus.publish_request({"uuid": f"u{n}"}) for n in range(3)), return_exceptions=True), WAIT)
            assert all(isinstance(outcome, BusUnavailable) for outcome in outcomes)
            assert await bus.publish_request({"uuid": "after"}) == "w1"
        await bus.close()

    run(scenario())


def test_every_envelope_read_is_counted_whoever_it_is_for():
    async def scenario():
        server = fakeredis.FakeServer()
        delivered = []
        bus = _bus(server, on_reply=delivered.append)
        bus.metrics = GatewayMetrics("gw-test")
        task = await _start_subscriber(bus)
        worker = fakeredis.FakeAsyncRedis(server=server)
        for topic in (bus.reply_topic, bus.response_topic, bus.response_topic):
            await worker.publish(topic, "{}")

        async def three() -> None:
            while len(delivered) < 3:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(three(), WAIT)
        assert bus.metrics.registry.get_sample_value(
            "chat_gateway_bus_envelopes_received_total", {"gateway_id": "gw-test"}) == 3
        await _stop(task)
        await worker.aclose()
        await bus.close()

    run(scenario())
