"""`workers.presence.online_user_ids` on a fake Redis, and its contract with the gateway's writer."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import fakeredis
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway import presence as gateway_presence
from websockets_gateway.connection import Connection
from websockets_gateway.ratelimit import TokenBucket
from websockets_gateway.registry import ConnectionRegistry
from websockets_gateway.keys import DEFAULT_KEYS as KEYS
from workers.presence import online_user_ids

TTL_MS = 15000


class CountingRedis(fakeredis.FakeRedis):
    """A fake Redis client that counts round trips: each command sent alone, each pipeline executed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.round_trips = 0
        self.failing = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self._trip()
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            self._trip()
            return execute(raise_on_error)

        pipe.execute = counted
        return pipe

    def _trip(self) -> None:
        self.round_trips += 1
        if self.failing:
            raise RedisConnectionError("Redis is down (test)")


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server) -> CountingRedis:
    client = CountingRedis(server=server)
    yield client
    client.close()


def _gateway_alive(client: redis.Redis, presence_id: str) -> None:
    client.set(KEYS.presence_gateway(presence_id), "host:1", px=TTL_MS)


def _members(client: redis.Redis, user_pk: int) -> set[str]:
    return {member.decode() for member in client.smembers(KEYS.presence_user(user_pk))}


def test_users_on_two_gateways_are_online(client):
    _gateway_alive(client, "gw-a.0")
    _gateway_alive(client, "gw-b.0")
    client.sadd(KEYS.presence_user(1), "gw-a.0")
    client.sadd(KEYS.presence_user(2), "gw-b.0")
    client.sadd(KEYS.presence_user(3), "gw-a.0", "gw-b.0")
    client.round_trips = 0

    assert online_user_ids(client, [1, 2, 3, 4]) == {1, 2, 3}
    # One pipeline of SMEMBERS, one MGET; nothing to clean up.
    assert client.round_trips == 2


def test_a_user_only_on_a_dead_gateway_is_offline_and_the_dead_id_is_removed(client):
    client.sadd(KEYS.presence_user(1), "gw-dead.0")  # its heartbeat expired: no key
    client.round_trips = 0

    assert online_user_ids(client, [1]) == set()
    assert client.round_trips == 3
    assert client.exists(KEYS.presence_user(1)) == 0


def test_a_user_with_one_live_and_one_dead_gateway_is_online_and_loses_only_the_dead_id(client):
    _gateway_alive(client, "gw-a.1")
    client.sadd(KEYS.presence_user(1), "gw-a.1", "gw-a.0", "gw-dead.3")
    client.sadd(KEYS.presence_user(2), "gw-dead.3")

    assert online_user_ids(client, [1, 2]) == {1}
    assert _members(client, 1) == {"gw-a.1"}
    assert _members(client, 2) == set()


def test_no_users_cost_no_round_trip():
    client = mock.Mock(spec=redis.Redis)
    assert online_user_ids(client, []) == set()
    assert online_user_ids(client, iter(())) == set()
    assert client.mock_calls == []


def test_users_with_no_presence_at_all_cost_one_round_trip(client):
    assert online_user_ids(client, [1, 2]) == set()
    assert client.round_trips == 1


def test_a_user_named_twice_is_read_once(client):
    _gateway_alive(client, "gw-a.0")
    client.sadd(KEYS.presence_user(1), "gw-a.0")
    assert online_user_ids(client, (pk for pk in [1, 1, 2])) == {1}


def test_a_client_that_decodes_responses_works_too(server):
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    _gateway_alive(client, "gw-a.0")
    client.sadd(KEYS.presence_user(1), "gw-a.0", "gw-dead.0")
    assert online_user_ids(client, [1]) == {1}
    assert client.smembers(KEYS.presence_user(1)) == {"gw-a.0"}


def test_redis_errors_reach_the_caller(client):
    client.failing = True
    with pytest.raises(redis.RedisError):
        online_user_ids(client, [1])


def test_a_failed_clean_up_still_gives_the_answer(client, caplog):
    _gateway_alive(client, "gw-a.0")
    client.sadd(KEYS.presence_user(1), "gw-a.0", "gw-dead.0")
    real_trip = client._trip

    def fail_the_clean_up() -> None:
        real_trip()
        if client.round_trips == 3:  # after SMEMBERS and MGET
            raise RedisConnectionError("Redis went away (test)")

    client.round_trips = 0
    client._trip = fail_the_clean_up
    assert online_user_ids(client, [1]) == {1}
    assert "could not remove dead presence ids of 1 users" in caplog.text


def test_the_gateway_writer_and_the_worker_reader_agree_on_the_keys(server):
    """The gateway's PresenceWriter writes and this module reads the same Redis: the key scheme is one."""
    reader = fakeredis.FakeRedis(server=server)

    async def scenario() -> None:
        def gateway(gateway_id: str) -> tuple[ConnectionRegistry, gateway_presence.PresenceWriter]:
            registry = ConnectionRegistry()
            writer = gateway_presence.PresenceWriter(registry, gateway_id, 15.0,
                                                     client=fakeredis.FakeAsyncRedis(server=server))
            registry.on_presence_change = writer.mark_dirty
            return registry, writer

        def connect(registry: ConnectionRegistry, conn_id: str, user_pk: int) -> Connection:
            conn = Connection(conn_id, ws=None, send_queue_size=1, bucket=TokenBucket(1.0, 1))
            registry.add(conn)
            registry.set_session(conn, {"user_pk": user_pk})
            return conn

        registry_a, writer_a = gateway("gw-a")
        registry_b, writer_b = gateway("gw-b")
        alice_tab1 = connect(registry_a, "a1", 1)
        alice_tab2 = connect(registry_a, "a2", 1)
        connect(registry_b, "b1", 2)
        carol = connect(registry_b, "b2", 3)
        for writer in (writer_a, writer_b):
            await writer.sync_once()  # registration
            await writer.sync_once()  # the dirty users
        assert online_user_ids(reader, [1, 2, 3, 4]) == {1, 2, 3}

        registry_b.remove(carol)
        registry_a.remove(alice_tab1)  # alice still has a tab
        await writer_a.sync_once()
        await writer_b.sync_once()
        assert online_user_ids(reader, [1, 2, 3]) == {1, 2}

        # Gateway b is killed (no clean-up): its heartbeat expires, and bob goes offline.
        reader.delete(KEYS.presence_gateway(writer_b.presence_id))
        assert online_user_ids(reader, [1, 2]) == {1}
        assert reader.exists(KEYS.presence_user(2)) == 0

        # Gateway a shuts down cleanly.
        registry_a.remove(alice_tab2)
        await writer_a.withdraw()
        assert online_user_ids(reader, [1, 2, 3]) == set()

    asyncio.run(asyncio.wait_for(scenario(), 10.0))
    reader.close()
