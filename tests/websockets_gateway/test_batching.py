"""The auto-pipelining publisher: publishes that come together share one round trip, each caller
gets its own receiver count or error, and every bound holds.

Redis is fakeredis's in-process server behind `RoundTripRedis`, which records each round trip.
"""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from websockets_gateway.batching import MAX_BATCH, PipelinedPublisher, PublishQueueFull

from .fakes import WAIT, RoundTripRedis, run, wait_until


async def _subscribers(server: fakeredis.FakeServer, channels: dict[str, int]) -> list:
    """`count` subscribers on each channel; returns their pubsubs, to close."""
    pubsubs = []
    for channel, count in channels.items():
        for _ in range(count):
            pubsub = fakeredis.FakeAsyncRedis(server=server).pubsub()
            await pubsub.subscribe(channel)
            pubsubs.append(pubsub)
    return pubsubs


async def _close(pubsubs: list) -> None:
    for pubsub in pubsubs:
        await pubsub.unsubscribe()
        await pubsub.aclose()


async def _until(predicate) -> None:
    """Let the loop run until `predicate()` holds (a pipeline started, a publish queued)."""
    await wait_until(predicate, interval=0)


def test_concurrent_publishes_share_one_round_trip_and_each_caller_gets_its_own_count():
    async def scenario():
        server = fakeredis.FakeServer()
        pubsubs = await _subscribers(server, {"two": 2, "one": 1})
        redis = RoundTripRedis(server)
        publisher = PipelinedPublisher(redis, timeout=WAIT)
        channels = ["two", "one", "none"] * 20
        counts = await asyncio.gather(*(publisher.publish(channel, f"m{n}") for n, channel in enumerate(channels)))
        assert counts == [{"two": 2, "one": 1, "none": 0}[channel] for channel in channels]
        assert len(redis.round_trips) == 1
        assert redis.round_trips[0] == [("PUBLISH", channel) for channel in channels]
        assert publisher.round_trips == 1
        await _close(pubsubs)

    run(scenario())


def test_a_lone_publish_goes_at_once_as_a_single_command():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        publisher = PipelinedPublisher(redis, timeout=WAIT)
        assert await publisher.publish("nobody", "m") == 0
        assert await publisher.publish("nobody", "m") == 0
        assert redis.round_trips == [[("PUBLISH", "nobody")], [("PUBLISH", "nobody")]]

    run(scenario())


def test_publishes_issued_while_a_pipeline_is_on_its_way_gather_into_the_next_one():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()
        sizes = []
        publisher = PipelinedPublisher(redis, timeout=WAIT, on_round_trip=sizes.append)
        first = asyncio.create_task(publisher.publish("c", "first"))
        await _until(lambda: publisher.in_flight == 1)
        later = []
        for n in range(10):  # one at a time, each in an iteration of its own
            later.append(asyncio.create_task(publisher.publish("c", f"later {n}")))
            await asyncio.sleep(0)
        assert len(redis.round_trips) == 1 and publisher.waiting == 10
        redis.gate.set()
        assert await asyncio.wait_for(asyncio.gather(first, *later), WAIT) == [0] * 11
        assert [len(round_trip) for round_trip in redis.round_trips] == [1, 10]
        assert sizes == [1, 10]

    run(scenario())


def test_batches_and_pipelines_in_flight_are_bounded():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()
        publisher = PipelinedPublisher(redis, timeout=WAIT, max_batch=4, max_in_flight=2)
        tasks = [asyncio.create_task(publisher.publish("c", f"m{n}")) for n in range(11)]
        await _until(lambda: len(redis.round_trips) == 2)
        # Two full batches on their way; the three left wait, however long, for one of them.
        for _ in range(5):
            await asyncio.sleep(0)
        assert publisher.in_flight == 2 and publisher.waiting == 3
        assert [len(round_trip) for round_trip in redis.round_trips] == [4, 4]
        redis.gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        assert [len(round_trip) for round_trip in redis.round_trips] == [4, 4, 3]
        assert [message for round_trip in redis.round_trips for message in round_trip] == [("PUBLISH", "c")] * 11

    run(scenario())


def test_a_second_pipeline_starts_beside_one_in_flight_only_for_a_full_batch():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()
        publisher = PipelinedPublisher(redis, timeout=WAIT, max_batch=4, max_in_flight=4)
        first = asyncio.create_task(publisher.publish("c", "first"))
        await _until(lambda: publisher.in_flight == 1)
        short = [asyncio.create_task(publisher.publish("c", f"s{n}")) for n in range(3)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert publisher.in_flight == 1 and publisher.waiting == 3  # not a full batch: it waits
        full = asyncio.create_task(publisher.publish("c", "fourth"))
        await _until(lambda: publisher.in_flight == 2)
        redis.gate.set()
        await asyncio.wait_for(asyncio.gather(first, full, *short), WAIT)
        assert [len(round_trip) for round_trip in redis.round_trips] == [1, 4]

    run(scenario())


def test_the_batch_bound_is_a_constant_that_a_burst_meets():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        publisher = PipelinedPublisher(redis, timeout=WAIT)
        await asyncio.gather(*(publisher.publish("c", f"m{n}") for n in range(MAX_BATCH + 1)))
        assert sorted(len(round_trip) for round_trip in redis.round_trips) == [1, MAX_BATCH]

    run(scenario())


def test_past_max_waiting_a_publish_fails_at_once():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()
        publisher = PipelinedPublisher(redis, timeout=WAIT, max_waiting=3)
        first = asyncio.create_task(publisher.publish("c", "first"))
        await _until(lambda: publisher.in_flight == 1)
        waiting = [asyncio.create_task(publisher.publish("c", f"w{n}")) for n in range(3)]
        await _until(lambda: publisher.waiting == 3)
        with pytest.raises(PublishQueueFull):
            await publisher.publish("c", "one too many")
        redis.gate.set()
        assert await asyncio.wait_for(asyncio.gather(first, *waiting), WAIT) == [0] * 4

    run(scenario())


def test_a_redis_error_fails_exactly_the_publishes_of_its_pipeline():
    async def scenario():
        server = fakeredis.FakeServer()
        pubsubs = await _subscribers(server, {"c": 1})
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()
        redis.failures[0] = RedisConnectionError("Connection reset by peer")
        publisher = PipelinedPublisher(redis, timeout=WAIT)
        doomed = [asyncio.create_task(publisher.publish("c", f"d{n}")) for n in range(3)]
        await _until(lambda: publisher.in_flight == 1)
        spared = [asyncio.create_task(publisher.publish("c", f"s{n}")) for n in range(3)]
        await _until(lambda: publisher.waiting == 3)
        redis.gate.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*doomed, *spared, return_exceptions=True), WAIT)
        assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes[:3])
        assert outcomes[3:] == [1, 1, 1]
        assert [len(round_trip) for round_trip in redis.round_trips] == [3, 3]
        await _close(pubsubs)

    run(scenario())


def test_an_error_in_place_fails_its_own_publish_only():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        redis.reply["broken"] = ResponseError("MOVED 1234 10.0.0.2:6379")
        publisher = PipelinedPublisher(redis, timeout=WAIT)
        outcomes = await asyncio.gather(publisher.publish("c", "a"), publisher.publish("broken", "b"),
                                        publisher.publish("c", "d"), return_exceptions=True)
        assert outcomes[0] == 0 and outcomes[2] == 0
        assert isinstance(outcomes[1], ResponseError)
        assert len(redis.round_trips) == 1

    run(scenario())


def test_a_cancelled_caller_leaves_the_others_their_results():
    async def scenario():
        server = fakeredis.FakeServer()
        pubsubs = await _subscribers(server, {"c": 1})
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()
        publisher = PipelinedPublisher(redis, timeout=WAIT)
        on_its_way = [asyncio.create_task(publisher.publish("c", f"f{n}")) for n in range(3)]
        await _until(lambda: publisher.in_flight == 1)
        queued = [asyncio.create_task(publisher.publish("c", f"q{n}")) for n in range(3)]
        await _until(lambda: publisher.waiting == 3)
        # One caller cancelled with its pipeline on its way, one while it still waits for one.
        on_its_way[1].cancel()
        queued[1].cancel()
        redis.gate.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*on_its_way, *queued, return_exceptions=True), WAIT)
        assert isinstance(outcomes[1], asyncio.CancelledError) and isinstance(outcomes[4], asyncio.CancelledError)
        assert [outcomes[n] for n in (0, 2, 3, 5)] == [1, 1, 1, 1]
        # The pipeline on its way still published all three; the cancelled waiting one never left.
        assert [len(round_trip) for round_trip in redis.round_trips] == [3, 2]
        await _close(pubsubs)

    run(scenario())


def test_a_publish_that_no_pipeline_takes_within_the_timeout_fails_and_one_on_its_way_does_not():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()
        publisher = PipelinedPublisher(redis, timeout=0.05)
        on_its_way = asyncio.create_task(publisher.publish("c", "first"))
        await _until(lambda: publisher.in_flight == 1)
        with pytest.raises(RedisTimeoutError, match="within 0.05s"):
            await asyncio.wait_for(publisher.publish("c", "stuck"), WAIT)
        # Past its own timeout too, the publish on its way waits for its round trip (the client's
        # socket timeout bounds that one), and then gets its count.
        assert not on_its_way.done()
        redis.gate.set()
        assert await asyncio.wait_for(on_its_way, WAIT) == 0
        assert redis.round_trips == [[("PUBLISH", "c")]]  # the expired one never left

    run(scenario())


def test_through_fakeredis_own_pipeline():
    async def scenario():
        server = fakeredis.FakeServer()
        pubsubs = await _subscribers(server, {"two": 2})
        publisher = PipelinedPublisher(fakeredis.FakeAsyncRedis(server=server), timeout=WAIT)
        assert await asyncio.gather(*(publisher.publish(c, "m") for c in ("two", "none", "two"))) == [2, 0, 2]
        assert publisher.round_trips == 1
        await _close(pubsubs)

    run(scenario())


def test_close_fails_the_waiting_and_in_flight_publishes():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()
        publisher = PipelinedPublisher(redis, timeout=WAIT)
        on_its_way = asyncio.create_task(publisher.publish("c", "first"))
        await _until(lambda: publisher.in_flight == 1)
        queued = asyncio.create_task(publisher.publish("c", "second"))
        await _until(lambda: publisher.waiting == 1)
        await publisher.close()
        for task in (on_its_way, queued):
            with pytest.raises(RedisConnectionError, match="closed"):
                await asyncio.wait_for(task, WAIT)
        assert publisher.in_flight == 0 and publisher.waiting == 0

    run(scenario())


def test_close_fails_a_pipeline_that_never_started_running():
    async def scenario():
        server = fakeredis.FakeServer()
        redis = RoundTripRedis(server)
        redis.gate = asyncio.Event()  # a pipeline that did start stays on its way
        publisher = PipelinedPublisher(redis, timeout=WAIT)
        publishing = asyncio.create_task(publisher.publish("c", "m"))
        while not publisher.in_flight:  # one iteration at a time: the pipeline's task is made, not yet run
            await asyncio.sleep(0)
        await publisher.close()
        assert redis.round_trips == []  # it never ran
        with pytest.raises(RedisConnectionError, match="closed"):
            await asyncio.wait_for(publishing, WAIT)

    run(scenario())
