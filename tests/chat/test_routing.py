"""`chat.routing`: which gateway processes a reply for several users goes to, read from presence."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis

from chat.routing import AliveCache, ReplyRoutes, live_presence
from tests.chat.conftest import online_on
from websockets_gateway.keys import Keys

KEYS = Keys("replies")
FALLBACK = "replies"
REPLY_TO = "gateway_reply:requester"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingRedis(fakeredis.FakeRedis):
    """Counts round trips: each command sent alone, and each pipeline executed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.round_trips: list[tuple[str, ...]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips.append((str(args[0]),))
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            self.round_trips.append(tuple(str(args[0]) for args, _ in pipe.command_stack))
            return execute(raise_on_error)

        pipe.execute = counted
        return pipe


@pytest.fixture
def client() -> CountingRedis:
    return CountingRedis(server=fakeredis.FakeServer())


def test_each_reply_goes_to_the_gateways_of_its_recipients_and_its_requester(client):
    first = online_on(client, KEYS, "gw-1", 1, 2)
    second = online_on(client, KEYS, "host.with.dots-0", 2, 3)
    online_on(client, KEYS, "gw-idle", 50)
    routes = ReplyRoutes(KEYS, FALLBACK)
    assert routes.topics(client, [([1], REPLY_TO), ([2, 3], None), ([3], first), ([7], REPLY_TO), ([7], None)]) == [
        {first, REPLY_TO}, {first, second}, {second, first}, {REPLY_TO}, set()]
    assert second == KEYS.gateway_reply_topic("host.with.dots-0")


def test_a_batch_is_one_read_of_one_command_per_distinct_recipient_list_and_the_steady_state_one_round_trip(client):
    online_on(client, KEYS, "gw-1", 1, 2)
    online_on(client, KEYS, "gw-2", 3)
    clock = Clock()
    routes = ReplyRoutes(KEYS, FALLBACK, AliveCache(ttl=1.0, clock=clock))
    # Two replies to one room share their read: a reply costs one command, whatever its room's size.
    batch = [([1, 2], REPLY_TO), ([2, 3], REPLY_TO), ([1, 2], REPLY_TO), ([1], REPLY_TO)]
    client.round_trips.clear()
    assert routes.topics(client, batch) == [
        {KEYS.gateway_reply_topic("gw-1"), REPLY_TO}, {KEYS.gateway_reply_topic("gw-1"), KEYS.gateway_reply_topic("gw-2"), REPLY_TO},
        {KEYS.gateway_reply_topic("gw-1"), REPLY_TO}, {KEYS.gateway_reply_topic("gw-1"), REPLY_TO}]
    unions, mget = client.round_trips
    assert unions == ("SUNION",) * 3 and mget == ("MGET",)

    client.round_trips.clear()
    clock.now += 0.5
    routes.topics(client, batch)
    assert client.round_trips == [("SUNION",) * 3]

    client.round_trips.clear()
    clock.now += 1.0  # the heartbeats are read again once the cache's time is up
    routes.topics(client, batch)
    assert [round_trip[0] for round_trip in client.round_trips] == ["SUNION", "MGET"]


def test_a_dead_gateway_gets_nothing_and_its_id_leaves_the_users_sets(client):
    alive = online_on(client, KEYS, "gw-1", 1)
    online_on(client, KEYS, "gw-dead", 1)
    [dead_key] = client.keys(KEYS.presence_gateway("gw-dead*"))
    client.delete(dead_key)
    assert ReplyRoutes(KEYS, FALLBACK).topics(client, [([1], None)]) == [{alive}]
    assert [member.decode().startswith("gw-1.") for member in client.smembers(KEYS.presence_user(1))] == [True]


def test_presence_unreadable_sends_every_reply_to_the_fallback_topic_alone(client, caplog):
    online_on(client, KEYS, "gw-1", 1)
    counted: list[int] = []
    routes = ReplyRoutes(KEYS, FALLBACK, on_fallback=counted.append)

    class Down:
        def pipeline(self, transaction: bool = True) -> Any:
            raise redis.ConnectionError("Connection refused")

    assert routes.topics(Down(), [([1], REPLY_TO), ([2], None)]) == [{FALLBACK}, {FALLBACK}]
    assert counted == [2]
    assert "presence not read (ConnectionError" in caplog.text


def test_a_presence_id_that_names_no_gateway_sends_its_reply_to_the_fallback_alone(client, caplog):
    online_on(client, KEYS, "gw-1", 1)
    client.set(KEYS.presence_gateway("odd"), "x")
    client.sadd(KEYS.presence_user(2), "odd")
    # Alone: every gateway reads the fallback topic, so a copy on gw-1's own would reach it twice.
    assert ReplyRoutes(KEYS, FALLBACK).topics(client, [([1, 2], REPLY_TO), ([1], None)]) == [
        {FALLBACK}, {KEYS.gateway_reply_topic("gw-1")}]
    assert "names no gateway process" in caplog.text


def test_live_presence_without_users_sends_nothing(client):
    client.round_trips.clear()
    assert live_presence(client, [], KEYS) == {}
    assert client.round_trips == []


def test_the_alive_cache_is_bounded_and_forgets_the_oldest_first():
    clock = Clock()
    cache = AliveCache(ttl=10.0, capacity=3, clock=clock)
    cache.add(["a", "b", "c"])
    cache.add(["a"])  # found again: now the newest
    cache.add(["d", "e"])
    assert len(cache) == 3
    assert cache.known(["a", "b", "c", "d", "e"]) == {"a", "d", "e"}


def test_the_alive_cache_forgets_the_expired_before_the_live():
    clock = Clock()
    cache = AliveCache(ttl=1.0, capacity=2, clock=clock)
    cache.add(["old"])
    clock.now += 0.6
    cache.add(["young"])
    clock.now += 0.6  # "old" expired
    cache.add(["new"])
    assert cache.known(["old", "young", "new"]) == {"young", "new"}
    assert len(cache) == 2
