"""Building the application: settings, routes, and the gateway's resources in `cleanup_ctx`."""

from __future__ import annotations

import asyncio
import os
import re

import fakeredis
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway import app as app_module
from websockets_gateway import bus as bus_module
from websockets_gateway import identity
from websockets_gateway.app import BUS_GAP_REASON, create_app, resync_after_bus_gap
from websockets_gateway.keys import DEFAULT_KEYS as KEYS
from websockets_gateway.registry import ConnectionRegistry
from websockets_gateway.state import GATEWAY_KEY, SETTINGS_KEY

from .fakes import WAIT, RecordingConnection, connected, fake_blocking_pool, make_settings, run, wait_until


def test_the_module_level_app_is_built_from_the_environment():
    assert isinstance(app_module.app, web.Application)
    assert app_module.app[SETTINGS_KEY].discovery == (not os.environ.get("WORKER_PROCESS_TOPICS", "").strip())


def test_create_app_reads_the_environment_without_settings(monkeypatch):
    monkeypatch.setenv("WORKER_PROCESS_TOPICS", "wa,wb")
    monkeypatch.setenv("REQUEST_TIMEOUT", "3")
    app = create_app()
    assert app[SETTINGS_KEY].worker_topics == ("wa", "wb")
    assert app[SETTINGS_KEY].request_timeout == 3.0


def test_create_app_routes():
    app = create_app(make_settings())
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()}
    assert ("GET", "/ws") in routes
    assert ("GET", "/healthz") in routes
    assert ("GET", "/metrics") in routes


def test_startup_builds_the_gateway_and_cleanup_releases_it(monkeypatch):
    server = fakeredis.FakeServer()
    clients = []

    class ClosableFake(fakeredis.FakeAsyncRedis):
        closed = False

        async def aclose(self, *args, **kwargs):
            self.closed = True
            await super().aclose(*args, **kwargs)

    def from_url(url, **kwargs):
        client = ClosableFake(server=server)
        clients.append((url, client))
        return client

    pools = []

    def pool_from_url(url, **kwargs):
        pool = fake_blocking_pool(server, kwargs["max_connections"], kwargs["timeout"])
        disconnect = pool.disconnect

        async def recorded_disconnect(*args, **kw):
            pool.disconnected = True
            await disconnect(*args, **kw)

        pool.disconnected = False
        pool.disconnect = recorded_disconnect
        pools.append((url, kwargs, pool))
        return pool

    monkeypatch.setattr(aioredis.Redis, "from_url", from_url)
    monkeypatch.setattr(aioredis.BlockingConnectionPool, "from_url", pool_from_url)
    settings = make_settings(request_timeout=7.0, max_in_flight=3, redis_url="redis://example:6379/5")

    async def scenario():
        app = create_app(settings)
        test_server = TestServer(app)
        await test_server.start_server()
        try:
            gateway = app[GATEWAY_KEY]
            assert re.fullmatch(rf"{re.escape(identity.default_base())}-\d+", gateway.gateway_id)
            assert gateway.settings is settings
            assert gateway.bus.reply_topic == f"gateway_reply:{settings.response_topic}:{gateway.gateway_id}"
            assert gateway.bus.response_topic == settings.response_topic
            assert gateway.bus.subscribed.is_set()
            assert gateway.pending.timeout == 7.0
            assert gateway.pending.max_in_flight == 3
            # Request and presence ids carry this start of the process besides its id.
            assert re.fullmatch(rf"{re.escape(gateway.gateway_id)}\.[0-9a-f]{{8}}", gateway.pending.gateway_id)
            assert gateway.router.registry is gateway.registry
            assert gateway.presence.gateway_id == gateway.pending.gateway_id
            assert gateway.presence.registry is gateway.registry
            assert gateway.registry.on_presence_change == gateway.presence.mark_dirty
            # One registry of metrics for the process, labelled with its id, shared by every part.
            assert gateway.metrics.gateway_id == gateway.gateway_id
            assert all(part.metrics is gateway.metrics
                       for part in (gateway.bus, gateway.pending, gateway.router, gateway.presence))
            # Both replies topics are listened on.
            probe = fakeredis.FakeAsyncRedis(server=server)
            assert await probe.publish(gateway.bus.reply_topic, "{}") == 1
            assert await probe.publish(gateway.bus.response_topic, "{}") == 1
            # The presence writer registered this process: its heartbeat is in Redis.
            await asyncio.wait_for(gateway.presence.synced.wait(), WAIT)
            heartbeat = gateway.presence.keys.presence_gateway(gateway.presence.presence_id)
            assert await probe.exists(heartbeat) == 1
        finally:
            await test_server.close()
        assert not gateway.bus.subscribed.is_set()
        # ... and withdrawn on the way out.
        assert await probe.exists(heartbeat) == 0
        await probe.aclose()
        # The bus's subscriber and the presence writer's client...
        assert [url for url, _ in clients] == [settings.redis_url] * 2
        assert all(client.closed for _, client in clients)
        # ... and the publisher, on a bounded blocking pool whose wait is within the deadline.
        [(url, pool_settings, pool)] = pools
        assert url == settings.redis_url
        assert pool_settings["max_connections"] == bus_module.PUBLISH_CONNECTIONS
        assert pool_settings["timeout"] == pool_settings["socket_timeout"] == 5.0 <= settings.request_timeout
        assert pool.disconnected

    run(scenario())


def test_two_apps_at_once_get_different_gateway_ids_and_a_restart_gets_the_same(redis_server):
    async def start():
        app = create_app(make_settings(gateway_id=f"gw-test-{os.getpid()}"))
        test_server = TestServer(app)
        await test_server.start_server()
        return app[GATEWAY_KEY], test_server

    async def scenario():
        first, first_server = await start()
        second, second_server = await start()
        assert first.gateway_id != second.gateway_id
        assert first.bus.reply_topic != second.bus.reply_topic
        assert {first.gateway_id, second.gateway_id} == {f"gw-test-{os.getpid()}-0", f"gw-test-{os.getpid()}-1"}
        await first_server.close()
        again, again_server = await start()  # the first one restarted: its id and its series again
        assert again.gateway_id == first.gateway_id
        # ... but not its requests' or presence ids: a reply still on its way to the first is not the new one's.
        assert again.pending.gateway_id != first.pending.gateway_id
        assert again.presence.presence_id != first.presence.presence_id
        assert not again.pending.owns(f"{first.pending.gateway_id}:1")
        await second_server.close()
        await again_server.close()

    run(scenario())


class FrameRecordingConnection(RecordingConnection):
    """A RecordingConnection that also keeps each frame as it was given (to see it encoded once)."""

    def __init__(self, conn_id: str) -> None:
        super().__init__(conn_id)
        self.frames: list[bytes | str] = []

    def send(self, frame: bytes | str) -> None:
        self.frames.append(frame)
        super().send(frame)


def test_after_a_bus_gap_authenticated_connections_are_told_to_resync_and_none_is_closed():
    async def scenario():
        registry = ConnectionRegistry()
        authenticated = []
        for conn_id, user_pk in (("a1", 1), ("a2", 1), ("b1", 2)):
            conn = FrameRecordingConnection(conn_id)
            registry.add(conn)
            registry.set_session(conn, {"user_pk": user_pk})
            authenticated.append(conn)
        anonymous = FrameRecordingConnection("x1")
        registry.add(anonymous)
        assert resync_after_bus_gap(registry) == 3
        for conn in authenticated:
            assert conn.received == [{"action": "resync", "reason": BUS_GAP_REASON}]
            assert not conn.closed and conn.ws.close_calls == []
        # One encoding, the same bytes for every connection.
        [frame] = authenticated[0].frames
        assert isinstance(frame, bytes)
        assert all(conn.frames[0] is frame for conn in authenticated)
        # It gets nothing but its own replies, so it missed nothing.
        assert anonymous.frames == [] and not anonymous.closed

    run(scenario())


class GappyRedis(fakeredis.FakeAsyncRedis):
    """A fake Redis client whose subscription breaks when the test asks (`pending_gaps`), as when
    Redis restarts: the bus's next read fails, and it subscribes again."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending_gaps = 0

    def pubsub(self, **kwargs):
        pubsub = super().pubsub(**kwargs)
        get_message = pubsub.get_message

        async def maybe_lost(*args, **kw):
            if self.pending_gaps:
                self.pending_gaps -= 1
                raise RedisConnectionError("Connection reset by peer (test)")
            return await get_message(*args, **kw)

        pubsub.get_message = maybe_lost
        return pubsub


def test_the_gateway_sends_one_resync_per_bus_gap_and_keeps_every_connection(monkeypatch):
    server = fakeredis.FakeServer()
    clients: list[GappyRedis] = []

    def from_url(url, **kwargs):
        clients.append(GappyRedis(server=server))
        return clients[-1]

    monkeypatch.setattr(aioredis.Redis, "from_url", from_url)
    monkeypatch.setattr(aioredis.BlockingConnectionPool, "from_url",
                        lambda url, **kwargs: fake_blocking_pool(server, kwargs["max_connections"], kwargs["timeout"]))
    monkeypatch.setattr(bus_module, "RECONNECT_BACKOFF_FIRST", 0.01)

    async def gap(bus, number: int) -> None:
        """Break the subscription; return once the bus is subscribed again (its handler has run)."""
        for client in clients:
            client.pending_gaps = 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3 * WAIT  # the bus reads with a 1 s timeout: it notices within that
        while bus.reconnects < number or not bus.subscribed.is_set():
            assert loop.time() < deadline, f"no resubscription after gap {number}"
            await asyncio.sleep(0.01)

    async def scenario():
        app = create_app(make_settings())
        test_server = TestServer(app)
        await test_server.start_server()
        try:
            gateway = app[GATEWAY_KEY]
            authenticated = [connected(gateway.registry, "a1", user_pk=1), connected(gateway.registry, "a2", user_pk=1),
                             connected(gateway.registry, "b1", user_pk=2)]
            anonymous = connected(gateway.registry, "x1")
            resync = {"action": "resync", "reason": BUS_GAP_REASON}
            for number in (1, 2):
                await gap(gateway.bus, number)
                # The resync follows the presence written again under a new epoch (Redis may have
                # restarted empty), so that the clients' sync comes once replies can reach them.
                await wait_until(lambda: gateway.presence.epoch == number and all(
                    len(conn.received) >= number for conn in authenticated), 3 * WAIT)
                for conn in authenticated:
                    assert conn.received == [resync] * number
                    assert not conn.closed and conn.ws.close_calls == []
                assert anonymous.received == [] and not anonymous.closed
            assert len(gateway.registry) == 4
        finally:
            await test_server.close()

    run(scenario())


def test_a_max_in_flight_over_half_the_send_queue_is_warned_about(redis_server, caplog):
    # A client's own replies fill at most half the queue plus its requests in flight
    # (Connection.read_pause): past that, a burst could overflow its own queue.
    async def scenario(settings):
        test_server = TestServer(create_app(settings))
        await test_server.start_server()
        await test_server.close()

    run(scenario(make_settings(send_queue_size=64, max_in_flight=32)))
    assert "over half of SEND_QUEUE_SIZE" not in caplog.text
    run(scenario(make_settings(send_queue_size=16, max_in_flight=32)))
    assert "MAX_IN_FLIGHT=32 is over half of SEND_QUEUE_SIZE=16" in caplog.text
