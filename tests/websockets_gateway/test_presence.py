"""The presence writer: what one gateway process writes to Redis about the users connected to it.

Redis is fakeredis. Most tests drive the writer one step at a time (`sync_once`); the ones
that run its background task wait on its `synced` event or on what the fake Redis saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway import presence as presence_module
from websockets_gateway.app import create_app
from websockets_gateway.metrics import GatewayMetrics
from websockets_gateway.keys import DEFAULT_KEYS as KEYS, Keys
from websockets_gateway.presence import PresenceWriter
from websockets_gateway.registry import ConnectionRegistry
from websockets_gateway.state import GATEWAY_KEY

from .fakes import WAIT, FakeWorker, connected, envelope, make_settings, run

GATEWAY_ID = "gw-test"
TTL = 15.0


class RecordingRedis(fakeredis.FakeAsyncRedis):
    """A fake Redis client that records every command it sends; while `failing`, every one raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[tuple[Any, ...]] = []
        self.failing = False
        self.failures = 0
        self.activity = asyncio.Event()

    def _check(self) -> None:
        if self.failing:
            self.failures += 1
            self.activity.set()
            raise RedisConnectionError("Redis is down (test)")

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self._check()
        self.commands.append(args)
        self.activity.set()
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        execute = pipe.execute

        async def recorded(raise_on_error: bool = True) -> Any:
            stack = [args for args, _ in pipe.command_stack]
            try:
                self._check()
            except RedisConnectionError:
                pipe.command_stack.clear()
                raise
            self.commands.extend(stack)
            self.activity.set()
            return await execute(raise_on_error)

        pipe.execute = recorded
        return pipe

    def named(self, *names: str) -> list[tuple[Any, ...]]:
        return [command for command in self.commands if command[0] in names]

    async def wait_until(self, predicate, timeout: float = WAIT) -> None:
        async def on_activity() -> None:
            while not predicate():
                self.activity.clear()
                await self.activity.wait()

        await asyncio.wait_for(on_activity(), timeout)


def _writer(server: fakeredis.FakeServer, ttl: float = TTL) -> tuple[ConnectionRegistry, PresenceWriter, RecordingRedis]:
    registry = ConnectionRegistry()
    client = RecordingRedis(server=server)
    writer = PresenceWriter(registry, GATEWAY_ID, ttl, client=client)
    registry.on_presence_change = writer.mark_dirty
    return registry, writer, client


@contextlib.asynccontextmanager
async def _running(writer: PresenceWriter) -> AsyncIterator[asyncio.Task[None]]:
    """The writer's background task, for the block: cancelled, and waited for, on the way out."""
    task = asyncio.create_task(writer.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task})


async def _members(probe: fakeredis.FakeAsyncRedis, user_pk: int, keys: Keys = KEYS) -> set[str]:
    return {member.decode() for member in await probe.smembers(keys.presence_user(user_pk))}


def test_keys_and_presence_id():
    registry = ConnectionRegistry()
    writer = PresenceWriter(registry, "gw-abc", 15.0, client=fakeredis.FakeAsyncRedis())
    assert writer.presence_id == "gw-abc.0"
    assert writer.heartbeat_interval == 5.0


def test_three_connections_of_one_user_are_one_sadd_and_one_srem_after_the_last_closes():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, client = _writer(server)
        probe = fakeredis.FakeAsyncRedis(server=server)
        await writer.sync_once()  # registration: the heartbeat
        tabs = [connected(registry, f"c{i}", user_pk=7) for i in range(3)]
        await writer.sync_once()
        assert await _members(probe, 7) == {writer.presence_id}

        registry.remove(tabs[0])
        registry.remove(tabs[1])
        assert writer.dirty_users == frozenset()
        await writer.sync_once()
        assert await _members(probe, 7) == {writer.presence_id}
        assert client.named("SREM") == []

        registry.remove(tabs[2])
        assert writer.dirty_users == {7}
        await writer.sync_once()
        assert await probe.exists(KEYS.presence_user(7)) == 0
        assert client.named("SADD", "SREM") == [
            ("SADD", KEYS.presence_user(7), writer.presence_id),
            ("SREM", KEYS.presence_user(7), writer.presence_id),
        ]

    run(scenario())


def test_connections_that_come_and_go_before_a_write_leave_the_truth_at_write_time():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, client = _writer(server)
        await writer.sync_once()
        flicker = connected(registry, "c1", user_pk=1)
        registry.remove(flicker)
        connected(registry, "c2", user_pk=2)
        await writer.sync_once()
        probe = fakeredis.FakeAsyncRedis(server=server)
        assert await _members(probe, 1) == set()
        assert await _members(probe, 2) == {writer.presence_id}
        assert sorted(client.named("SADD", "SREM")) == [
            ("SADD", KEYS.presence_user(2), writer.presence_id),
            ("SREM", KEYS.presence_user(1), writer.presence_id),
        ]

    run(scenario())


def test_reauthenticating_as_another_user_moves_presence():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, _ = _writer(server)
        probe = fakeredis.FakeAsyncRedis(server=server)
        await writer.sync_once()
        conn = connected(registry, "c1", user_pk=1)
        await writer.sync_once()
        registry.set_session(conn, {"user_pk": 2})
        assert writer.dirty_users == {1, 2}
        await writer.sync_once()
        assert await _members(probe, 1) == set()
        assert await _members(probe, 2) == {writer.presence_id}

    run(scenario())


def test_reauthenticating_as_the_same_user_writes_nothing():
    async def scenario():
        registry, writer, _ = _writer(fakeredis.FakeServer())
        await writer.sync_once()
        conn = connected(registry, "c1", user_pk=1)
        await writer.sync_once()
        registry.set_session(conn, {"user_pk": 1})
        assert writer.dirty_users == frozenset()

    run(scenario())


def test_an_unauthenticated_connection_is_not_presence():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, client = _writer(server)
        await writer.sync_once()
        conn = connected(registry, "c1")
        registry.remove(conn)
        assert writer.dirty_users == frozenset()
        await writer.sync_once()
        assert client.named("SADD", "SREM") == []

    run(scenario())


def test_the_heartbeat_key_has_a_ttl_and_each_write_refreshes_it():
    async def scenario():
        server = fakeredis.FakeServer()
        _, writer, _ = _writer(server, ttl=12.0)
        probe = fakeredis.FakeAsyncRedis(server=server)
        await writer.sync_once()
        key = KEYS.presence_gateway(writer.presence_id)
        assert 0 < await probe.pttl(key) <= 12000
        await probe.pexpire(key, 500)
        await writer.sync_once()  # a heartbeat with no dirty user
        assert 11000 < await probe.pttl(key) <= 12000

    run(scenario())


def test_after_a_redis_failure_the_epoch_goes_up_and_every_connected_user_is_added_again():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, client = _writer(server)
        probe = fakeredis.FakeAsyncRedis(server=server)
        await writer.sync_once()
        first_id = writer.presence_id
        stays = connected(registry, "c1", user_pk=1)
        leaves = connected(registry, "c2", user_pk=2)
        await writer.sync_once()

        client.failing = True
        registry.remove(leaves)  # its SREM is lost with the outage
        connected(registry, "c3", user_pk=3)
        with pytest.raises(RedisConnectionError):
            await writer.sync_once()
        # Nothing is forgotten while Redis is down.
        assert writer.dirty_users == {2, 3}
        assert writer.epoch == 0
        # A failed registration may have written part of its id's entries: the next attempt
        # takes a new id again, so a half-written one only ever dies with its TTL.
        with pytest.raises(RedisConnectionError):
            await writer.sync_once()
        assert writer.dirty_users == {2, 3}
        assert writer.epoch == 1

        client.failing = False
        await writer.sync_once()
        assert writer.epoch == 2
        second_id = writer.presence_id
        assert second_id == f"{GATEWAY_ID}.2"
        assert await _members(probe, 1) == {first_id, second_id}
        assert await _members(probe, 3) == {second_id}
        # The user that left during the outage is still under the old id, which is dead now.
        assert await _members(probe, 2) == {first_id}
        assert await probe.exists(KEYS.presence_gateway(first_id)) == 0
        assert await probe.exists(KEYS.presence_gateway(second_id)) == 1
        assert writer.dirty_users == frozenset()
        assert stays in registry.of_user(1)

    run(scenario())


def test_recovery_adds_the_users_in_bounded_batches(monkeypatch):
    monkeypatch.setattr(presence_module, "BATCH_SIZE", 2)

    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, client = _writer(server)
        for user_pk in range(5):
            connected(registry, f"c{user_pk}", user_pk=user_pk)
        sizes = []
        execute = client.pipeline

        def sizing_pipeline(*args, **kwargs):
            pipe = execute(*args, **kwargs)
            inner = pipe.execute

            async def sized(raise_on_error=True):
                sizes.append(sum(1 for args, _ in pipe.command_stack if args[0] == "SADD"))
                return await inner(raise_on_error)

            pipe.execute = sized
            return pipe

        client.pipeline = sizing_pipeline
        await writer.sync_once()
        assert sorted(sizes) == [0, 1, 2, 2]
        probe = fakeredis.FakeAsyncRedis(server=server)
        for user_pk in range(5):
            assert await _members(probe, user_pk) == {writer.presence_id}

    run(scenario())


def test_dirty_users_are_written_in_bounded_batches(monkeypatch):
    monkeypatch.setattr(presence_module, "BATCH_SIZE", 2)

    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, client = _writer(server)
        await writer.sync_once()
        for user_pk in range(5):
            connected(registry, f"c{user_pk}", user_pk=user_pk)
        remaining = []
        while writer.dirty_users:
            await writer.sync_once()
            remaining.append(len(writer.dirty_users))
        assert remaining == [3, 1, 0]
        assert len(client.named("SADD")) == 5

    run(scenario())


def test_a_lapsed_heartbeat_registers_again_under_a_new_id():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, _ = _writer(server)
        probe = fakeredis.FakeAsyncRedis(server=server)
        await writer.sync_once()
        connected(registry, "c1", user_pk=1)
        await writer.sync_once()
        old_id = writer.presence_id
        # The process stalled past its TTL; a reader took the id for dead and removed it.
        await probe.delete(KEYS.presence_gateway(old_id))
        await probe.srem(KEYS.presence_user(1), old_id)

        await writer.sync_once()  # finds the lapse: the refresh does not recreate the key
        assert await probe.exists(KEYS.presence_gateway(old_id)) == 0
        await writer.sync_once()
        assert writer.epoch == 1
        assert await _members(probe, 1) == {writer.presence_id}
        assert await probe.exists(KEYS.presence_gateway(writer.presence_id)) == 1

    run(scenario())


def test_only_a_registration_after_a_loss_calls_on_registered_again():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, _ = _writer(server)
        probe = fakeredis.FakeAsyncRedis(server=server)
        calls = []
        writer.on_registered_again = lambda: calls.append(writer.presence_id)
        connected(registry, "c1", user_pk=1)
        await writer.sync_once()
        await writer.sync_once()
        assert calls == []  # the first registration and a plain write are no loss

        # Redis restarted empty: the bus's subscription came back, and asks for presence anew.
        await probe.flushall()
        writer.register_again()
        await writer.sync_once()
        assert writer.epoch == 1 and calls == [writer.presence_id]
        assert await _members(probe, 1) == {writer.presence_id}

        # A lapsed heartbeat is a loss too: found by the refresh, written again by the next step.
        await probe.delete(KEYS.presence_gateway(writer.presence_id))
        await writer.sync_once()
        await writer.sync_once()
        assert writer.epoch == 2 and calls == [f"{GATEWAY_ID}.1", f"{GATEWAY_ID}.2"]

    run(scenario())


def test_withdraw_on_shutdown_removes_the_heartbeat_and_our_id_from_our_users():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, _ = _writer(server)
        probe = fakeredis.FakeAsyncRedis(server=server)
        other_gateway = "gw-other.0"
        await probe.sadd(KEYS.presence_user(1), other_gateway)
        await writer.sync_once()
        connected(registry, "c1", user_pk=1)
        connected(registry, "c2", user_pk=2)
        leaving = connected(registry, "c3", user_pk=3)
        await writer.sync_once()
        registry.remove(leaving)  # dirty, not written yet

        await writer.withdraw()

        assert await probe.exists(KEYS.presence_gateway(writer.presence_id)) == 0
        assert await _members(probe, 1) == {other_gateway}
        assert await _members(probe, 2) == set()
        assert await _members(probe, 3) == set()

    run(scenario())


def test_withdraw_when_redis_is_down_gives_up_with_a_warning(caplog):
    async def scenario():
        registry, writer, client = _writer(fakeredis.FakeServer())
        await writer.sync_once()
        connected(registry, "c1", user_pk=1)
        client.failing = True
        await writer.withdraw(timeout=1.0)

    run(scenario())
    assert "could not withdraw 1 users" in caplog.text


def test_the_dirty_set_never_holds_more_than_the_users_touched():
    async def scenario():
        registry, writer, client = _writer(fakeredis.FakeServer())
        await writer.sync_once()
        client.failing = True  # nothing drains the dirty set meanwhile
        users = range(3)
        for round_number in range(50):
            conns = [connected(registry, f"c{round_number}-{user_pk}-{tab}", user_pk=user_pk)
                     for user_pk in users for tab in range(4)]
            assert len(writer.dirty_users) <= len(users)
            for conn in conns:
                registry.remove(conn)
            assert len(writer.dirty_users) <= len(users)
        assert writer.dirty_users == set(users)

    run(scenario())


def test_the_background_task_writes_at_once_when_a_user_connects():
    async def scenario():
        server = fakeredis.FakeServer()
        # A heartbeat every 100 s: a write within the test's wait can only be the dirty wake-up.
        registry, writer, _ = _writer(server, ttl=300.0)
        probe = fakeredis.FakeAsyncRedis(server=server)
        async with _running(writer) as task:
            await asyncio.wait_for(writer.synced.wait(), WAIT)
            conn = connected(registry, "c1", user_pk=1)
            assert not writer.synced.is_set()
            await asyncio.wait_for(writer.synced.wait(), WAIT)
            assert await _members(probe, 1) == {writer.presence_id}
            registry.remove(conn)
            await asyncio.wait_for(writer.synced.wait(), WAIT)
            assert await _members(probe, 1) == set()
        assert task.cancelled()

    run(scenario())



def test_users_arriving_one_by_one_are_written_together_at_most_once_per_flush_interval(monkeypatch):
    # Clients coming back after a restart arrive spread out: each used to cost a transaction.
    monkeypatch.setattr(presence_module, "FLUSH_INTERVAL", 0.1)

    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, client = _writer(server, ttl=300.0)
        probe = fakeredis.FakeAsyncRedis(server=server)
        async with _running(writer):
            await asyncio.wait_for(writer.synced.wait(), WAIT)
            writes_before = len(client.named("SET"))
            loop = asyncio.get_running_loop()
            started = loop.time()
            for user_pk in range(1, 61):
                connected(registry, f"c{user_pk}", user_pk=user_pk)
                await asyncio.sleep(0.005)
            elapsed = loop.time() - started
            await asyncio.wait_for(writer.synced.wait(), WAIT)
        for user_pk in range(1, 61):
            assert await _members(probe, user_pk) == {writer.presence_id}
        # Every write refreshes the heartbeat (one SET each): at most one per interval, plus the
        # first at once and the last after the burst; one per user without the gathering.
        writes = len(client.named("SET")) - writes_before
        assert writes <= elapsed / 0.1 + 3, (writes, elapsed)

    run(scenario())

def test_the_background_task_refreshes_the_heartbeat_on_its_timer():
    async def scenario():
        _, writer, client = _writer(fakeredis.FakeServer(), ttl=0.3)
        async with _running(writer):
            await client.wait_until(lambda: len(client.named("SET")) >= 3)
        # The first SET creates the key; every refresh after it must not recreate a lapsed one.
        first, *refreshes = client.named("SET")
        assert "XX" not in first
        assert all("XX" in refresh for refresh in refreshes)

    run(scenario())


def test_the_background_task_recovers_from_a_redis_outage(monkeypatch, caplog):
    monkeypatch.setattr(presence_module, "RECONNECT_BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(presence_module, "RECONNECT_BACKOFF_MAX", 0.02)

    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, client = _writer(server)
        writer.metrics = GatewayMetrics(GATEWAY_ID)
        probe = fakeredis.FakeAsyncRedis(server=server)
        async with _running(writer):
            await asyncio.wait_for(writer.synced.wait(), WAIT)
            client.failing = True
            connected(registry, "c1", user_pk=1)
            await client.wait_until(lambda: client.failures >= 2)
            assert writer.metrics.registry.get_sample_value("chat_gateway_presence_errors_total",
                                                            {"gateway_id": GATEWAY_ID}) >= 1
            assert not writer.synced.is_set()
            client.failing = False
            await asyncio.wait_for(writer.synced.wait(), WAIT)
            assert writer.epoch >= 1
            assert await _members(probe, 1) == {writer.presence_id}
            assert await probe.exists(KEYS.presence_gateway(f"{GATEWAY_ID}.0")) == 0

    run(scenario())
    assert "presence gw-test.0: write failed (ConnectionError" in caplog.text


def _authenticating(users: dict[str, int]):
    def answer(bus_request: dict[str, Any]):
        user_pk = users[bus_request["token"]]
        reply = {"uuid": bus_request["uuid"], "action": "authenticate", "status": "success",
                 "user": {"username": f"user{user_pk}"}}
        return bus_request["reply_to"], envelope(bus_request, reply, session_data={"user_pk": user_pk})

    return answer


def test_the_running_gateway_writes_presence_and_withdraws_it_on_shutdown(redis_server):
    async def scenario():
        probe = fakeredis.FakeAsyncRedis(server=redis_server)
        app = create_app(make_settings())
        async with (FakeWorker(redis_server, answer=_authenticating({"alice-token": 1})),
                    TestClient(TestServer(app)) as client):
            presence = app[GATEWAY_KEY].presence
            assert app[GATEWAY_KEY].registry.on_presence_change == presence.mark_dirty
            tabs = []
            for number in range(2):
                ws = await client.ws_connect("/ws")
                await ws.send_str(json.dumps({"uuid": f"u{number}", "action": "authenticate",
                                              "token": "alice-token"}))
                message = await ws.receive(timeout=WAIT)
                assert message.type == WSMsgType.TEXT
                tabs.append(ws)
            await asyncio.wait_for(presence.synced.wait(), WAIT)
            assert await _members(probe, 1, presence.keys) == {presence.presence_id}
            assert await probe.exists(presence.keys.presence_gateway(presence.presence_id)) == 1
            presence_id = presence.presence_id
            for ws in tabs:
                await ws.close()
        assert await probe.exists(presence.keys.presence_gateway(presence_id)) == 0
        assert await _members(probe, 1, presence.keys) == set()

    run(scenario())


# `written`: when Redis holds a user's presence here (the router holds authenticate replies on it)

def test_written_is_a_future_until_the_write_of_the_user_then_none():
    async def scenario():
        server = fakeredis.FakeServer()
        registry, writer, _ = _writer(server)
        probe = fakeredis.FakeAsyncRedis(server=server)
        assert writer.written(1) is not None  # not registered yet: nothing is written
        await writer.sync_once()
        connected(registry, "c1", user_pk=1)
        waiter = writer.written(1)
        assert waiter is not None and writer.written(1) is waiter  # one future a user, shared
        await asyncio.sleep(0)
        assert not waiter.done()
        await writer.sync_once()
        assert waiter.done()
        assert await _members(probe, 1) == {writer.presence_id}
        assert writer.written(1) is None

    run(scenario())


def test_registration_releases_the_waits_of_every_user_it_wrote():
    async def scenario():
        registry, writer, _ = _writer(fakeredis.FakeServer())
        connected(registry, "c1", user_pk=1)
        waiter = writer.written(1)
        await writer.sync_once()  # the registration adds every connected user
        assert waiter.done()

    run(scenario())


def test_a_failed_write_keeps_the_wait_until_a_write_succeeds():
    async def scenario():
        registry, writer, client = _writer(fakeredis.FakeServer())
        await writer.sync_once()
        connected(registry, "c1", user_pk=1)
        waiter = writer.written(1)
        client.failing = True
        with pytest.raises(RedisConnectionError):
            await writer.sync_once()
        assert not waiter.done()
        client.failing = False
        await writer.sync_once()  # registers again under a new epoch, with the user
        assert waiter.done()

    run(scenario())


def test_a_write_under_way_does_not_release_a_wait_on_a_change_it_may_not_have_seen():
    async def scenario():
        registry, writer, client = _writer(fakeredis.FakeServer())
        await writer.sync_once()
        first = connected(registry, "c1", user_pk=1)
        entered, gate = asyncio.Event(), asyncio.Event()
        pipeline = client.pipeline

        def gated_pipeline(*args, **kwargs):
            pipe = pipeline(*args, **kwargs)
            execute = pipe.execute

            async def gated(raise_on_error=True):
                entered.set()
                await gate.wait()
                return await execute(raise_on_error)

            pipe.execute = gated
            return pipe

        client.pipeline = gated_pipeline
        flush = asyncio.create_task(writer.sync_once())
        await entered.wait()  # user 1 taken for this write, not written yet
        waiter = writer.written(1)
        assert waiter is not None
        registry.remove(first)
        connected(registry, "c2", user_pk=1)  # gone and back meanwhile: dirty again
        gate.set()
        await flush
        assert not waiter.done()
        await writer.sync_once()
        assert waiter.done()

    run(scenario())
