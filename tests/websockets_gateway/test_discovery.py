"""`websockets_gateway.discovery`: the gateway's choice of worker topics follows the registry in Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import fakeredis
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway import discovery as discovery_module
from websockets_gateway.app import create_app
from websockets_gateway.bus import WorkerTopics
from websockets_gateway.discovery import WorkerDiscovery
from websockets_gateway.keys import Keys
from websockets_gateway.settings import GatewaySettings
from websockets_gateway.state import GATEWAY_KEY

from .fakes import ALLOWED_ORIGIN, WAIT, FakeClock, make_settings, run

KEYS = Keys("worker_response_test")


class InOrder(random.Random):
    def shuffle(self, x, random=None):
        x.sort()


async def register(client: fakeredis.FakeAsyncRedis, topic: str, keys: Keys = KEYS) -> None:
    """What a worker's registration writes (workers/discovery.py: the contract test is there)."""
    await client.set(keys.worker_heartbeat(topic), "host:1", px=60_000)
    await client.sadd(keys.worker_topics, topic)


def make_discovery(client, **kwargs) -> WorkerDiscovery:
    return WorkerDiscovery(client, KEYS, WorkerTopics([], rng=InOrder(), clock=FakeClock()), **kwargs)


# WorkerTopics.update

def test_update_replaces_the_choice_and_keeps_the_penalty_of_topics_that_stay():
    clock = FakeClock()
    topics = WorkerTopics(["a", "b"], retry_after=1.0, rng=InOrder(), clock=clock)
    topics.mark_dead("a")
    topics.mark_dead("b")
    topics.update(["a", "c"])
    assert topics.topics == ("a", "c")
    assert topics.dead == {"a"}, "b left the choice; a stays dead until its probe"
    assert topics.candidates() == ["c", "a"]
    topics.update([])
    assert topics.candidates() == [] and topics.dead == frozenset()


# One read of the registry

def test_a_read_chooses_the_registered_topics_whose_heartbeat_lives_and_prunes_the_others(caplog):
    async def scenario():
        client = fakeredis.FakeAsyncRedis()
        discovery = make_discovery(client)
        for topic in ("w1", "w2", "w3"):
            await register(client, topic)
        await client.delete(KEYS.worker_heartbeat("w2"))  # killed: its heartbeat expired
        with caplog.at_level(logging.INFO, logger="websockets_gateway.discovery"):
            live = await discovery.read_once()
        assert live == {"w1", "w3"}
        assert discovery.topics.topics == ("w1", "w3")
        assert await client.smembers(KEYS.worker_topics) == {b"w1", b"w3"}
        assert "removed 1 topics whose heartbeat expired: w2" in caplog.text
        assert "live workers: 2 (joined: w1, w3; left: none)" in caplog.text

    run(scenario())


def test_reads_follow_workers_that_come_and_go_and_log_only_changes(caplog):
    async def scenario():
        client = fakeredis.FakeAsyncRedis()
        discovery = make_discovery(client)
        assert await discovery.read_once() == frozenset()
        assert discovery.topics.candidates() == []
        await register(client, "w1")
        with caplog.at_level(logging.INFO, logger="websockets_gateway.discovery"):
            await discovery.read_once()
            await discovery.read_once()
            await register(client, "w2")
            await client.srem(KEYS.worker_topics, "w1")  # withdrawn on a clean stop
            await client.delete(KEYS.worker_heartbeat("w1"))
            await discovery.read_once()
        assert discovery.topics.candidates() == ["w2"]
        changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("live workers")]
        assert changes == ["live workers: 1 (joined: w1; left: none)", "live workers: 1 (joined: w2; left: w1)"]

    run(scenario())


def test_a_read_takes_at_most_max_topics_and_dead_ones_shrink_the_set_read_after_read(caplog):
    async def scenario():
        client = fakeredis.FakeAsyncRedis()
        discovery = make_discovery(client, max_topics=3)
        for n in range(7):
            await client.sadd(KEYS.worker_topics, f"dead{n}")  # never a heartbeat: workers long gone
        await register(client, "live")
        with caplog.at_level(logging.WARNING, logger="websockets_gateway.discovery"):
            first = await discovery.read_once()
        assert len(discovery.topics.topics) <= 3
        assert "holds 8 topics; reading 3" in caplog.text
        assert await client.scard(KEYS.worker_topics) <= 8 - 3 + len(first)
        for _ in range(20):
            if await discovery.read_once() == {"live"} and await client.scard(KEYS.worker_topics) == 1:
                break
        assert discovery.live == {"live"} and await client.smembers(KEYS.worker_topics) == {b"live"}

    run(scenario())


def test_another_deployments_workers_are_not_chosen():
    async def scenario():
        client = fakeredis.FakeAsyncRedis()
        await register(client, "theirs", Keys("staging"))
        await register(client, "ours")
        assert await make_discovery(client).read_once() == {"ours"}

    run(scenario())


# The task

class FailingRedis(fakeredis.FakeAsyncRedis):
    """Fails every command while `down` is set."""

    down = False

    async def execute_command(self, *args, **kwargs):
        if self.down:
            raise RedisConnectionError("Connection refused")
        return await super().execute_command(*args, **kwargs)

    def pipeline(self, *args, **kwargs):
        if self.down:
            raise RedisConnectionError("Connection refused")
        return super().pipeline(*args, **kwargs)


def test_the_task_reads_until_cancelled_and_keeps_the_last_choice_while_redis_fails(monkeypatch, caplog):
    async def scenario():
        client = FailingRedis()
        discovery = make_discovery(client, interval=0.01)
        await register(client, "w1")
        task = asyncio.create_task(discovery.run())
        await asyncio.wait_for(discovery.ready.wait(), WAIT)
        assert discovery.topics.topics == ("w1",)
        client.down = True
        while "worker registry not read" not in caplog.text:
            await asyncio.sleep(0.01)
        assert discovery.topics.topics == ("w1",), "a Redis blip empties no choice"
        client.down = False
        await register(client, "w2")
        while discovery.topics.topics != ("w1", "w2"):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())


def test_an_unexpected_error_is_logged_and_the_task_goes_on(monkeypatch, caplog):
    async def scenario():
        client = fakeredis.FakeAsyncRedis()
        discovery = make_discovery(client, interval=0.01)
        real_read = discovery.read_once
        calls = []

        async def read_once():
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("a bug")
            return await real_read()

        monkeypatch.setattr(discovery, "read_once", read_once)
        task = asyncio.create_task(discovery.run())
        await asyncio.wait_for(discovery.ready.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "unexpected error" in caplog.text and len(calls) >= 2

    run(scenario())


# The application

def test_without_worker_process_topics_the_gateway_uses_discovery_and_with_them_it_does_not():
    assert GatewaySettings.from_env({}).discovery
    assert GatewaySettings.from_env({"WORKER_PROCESS_TOPICS": "  "}).discovery
    static = GatewaySettings.from_env({"WORKER_PROCESS_TOPICS": "w1,w2"})
    assert not static.discovery and static.worker_topics == ("w1", "w2")


def test_a_gateway_with_discovery_sends_requests_to_a_registered_worker(redis_server):
    async def scenario():
        probe = fakeredis.FakeAsyncRedis(server=redis_server)
        worker = probe.pubsub()
        await worker.subscribe("chat.worker.h-1-ab")
        await register(probe, "chat.worker.h-1-ab", Keys(make_settings().response_topic))
        app = create_app(make_settings(worker_topics=()))
        async with TestClient(TestServer(app)) as http:
            gateway = app[GATEWAY_KEY]
            # Served only once the registry was read: the first request finds the worker.
            assert gateway.bus.topics.topics == ("chat.worker.h-1-ab",)
            ws = await http.ws_connect("/ws", headers={"Origin": ALLOWED_ORIGIN})
            await ws.send_json({"uuid": "u1", "action": "authenticate", "token": "t"})
            message = None
            while message is None or message["type"] != "message":
                message = await worker.get_message(timeout=WAIT)
            assert json.loads(message["data"])["uuid"] == "u1"
            await ws.close()
        await worker.aclose()
        await probe.aclose()

    run(scenario())


def test_a_gateway_with_topics_reads_no_registry(redis_server, monkeypatch):
    made = []
    monkeypatch.setattr(discovery_module.WorkerDiscovery, "__init__",
                        lambda self, *args, **kwargs: made.append(args))

    async def scenario():
        app = create_app(make_settings(worker_topics=("w1",)))
        async with TestClient(TestServer(app)):
            assert app[GATEWAY_KEY].bus.topics.topics == ("w1",)

    run(scenario())
    assert made == []
