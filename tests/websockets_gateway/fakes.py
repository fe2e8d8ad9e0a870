"""Fakes shared by the gateway's unit tests: a clock, a recording WebSocket, connections, settings, workers.

Nothing here sleeps to synchronise: waits are on events, each bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any, Callable, Coroutine

import fakeredis
import redis.asyncio as aioredis
from aiohttp import WSMessage, WSMsgType
from fakeredis.aioredis import FakeAsyncRedisConnection

from websockets_gateway.connection import Connection
from websockets_gateway.metrics import GatewayMetrics
from websockets_gateway.ratelimit import TokenBucket
from websockets_gateway.registry import ConnectionRegistry
from websockets_gateway.settings import GatewaySettings

# Upper bound for any one test's event loop: a hang fails fast instead of at pytest-timeout.
TEST_TIMEOUT = 10.0
# Upper bound for one wait inside a test (a reply, a close, a subscription).
WAIT = 2.0



async def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, interval: float = 0.01) -> None:
    """For state no event announces (a timer's effect, a handler's clean-up, a task's progress):
    re-check every `interval` seconds (0: every turn of the loop) until true, bounded by `timeout`."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(interval)

    await asyncio.wait_for(poll(), timeout)


ALLOWED_ORIGIN = "http://chat.example"
WORKER_TOPIC = "worker_test"
# The protocol's actions and error codes as the workers publish them (workers.actions): what the
# gateway's metrics label by. Test data here: the gateway's tests never import the workers.
PROTOCOL_ACTIONS = ("authenticate", "select_room", "new_message", "list_rooms", "create_room", "add_members",
                    "leave_room", "direct_message", "load_history", "mark_read", "typing", "who_is_online", "sync")
PROTOCOL_ERROR_CODES = ("invalid_message_format", "invalid_action", "invalid_token", "authentication_required",
                        "invalid_room_id", "empty_text", "text_too_long", "invalid_user", "forbidden", "server_error")
CATALOGUE = json.dumps({"actions": {name: {"retry": True} for name in PROTOCOL_ACTIONS},
                        "error_codes": list(PROTOCOL_ERROR_CODES)})


def run(coro: Coroutine[Any, Any, Any], timeout: float = TEST_TIMEOUT) -> Any:
    """Run one coroutine on a fresh event loop, failing with TimeoutError if it hangs."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeWebSocket:
    """Records what a Connection writes and how it closes the socket.

    With `send_gate`, every send waits for that event: a client that stops reading.
    """

    def __init__(self, send_gate: asyncio.Event | None = None) -> None:
        self.sent: list[str] = []
        # The task of each send, as it begins (the writer that sends it).
        self.senders: list[asyncio.Task[Any] | None] = []
        self.pings = 0
        self.close_calls: list[tuple[int, bytes]] = []
        self.send_gate = send_gate
        self.incoming: asyncio.Queue[WSMessage] = asyncio.Queue()
        self.receiving = False
        # For each close, whether a read was waiting when it began.
        self.closed_while_receiving: list[bool] = []
        self._activity = asyncio.Event()

    async def send_str(self, text: str) -> None:
        self.senders.append(asyncio.current_task())
        if self.send_gate is not None:
            await self.send_gate.wait()
        self.sent.append(text)
        self._activity.set()

    async def send_frame(self, message: bytes, opcode: WSMsgType) -> None:
        """A text frame from its UTF-8 payload (what the gateway sends), recorded as its text."""
        assert opcode == WSMsgType.TEXT, opcode
        await self.send_str(message.decode("utf-8"))

    async def ping(self, message: bytes = b"") -> None:
        self.pings += 1
        self._activity.set()

    async def receive(self) -> WSMessage:
        """The client's next frame: `incoming`'s next, waited for. `receiving` says a read waits."""
        self.receiving = True
        self._activity.set()
        try:
            return await self.incoming.get()
        finally:
            self.receiving = False

    async def close(self, *, code: int, message: bytes = b"") -> bool:
        self.close_calls.append((code, message))
        self.closed_while_receiving.append(self.receiving)
        self._activity.set()
        return True

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async def poll_on_activity() -> None:
            while not predicate():
                self._activity.clear()
                await self._activity.wait()

        await asyncio.wait_for(poll_on_activity(), timeout)


def fake_blocking_pool(server: fakeredis.FakeServer, max_connections: int,
                       timeout: float | None) -> aioredis.BlockingConnectionPool:
    """redis-py's BlockingConnectionPool (what the gateway publishes through) on fakeredis's server."""
    return aioredis.BlockingConnectionPool(connection_class=FakeAsyncRedisConnection, server=server,
                                           max_connections=max_connections, timeout=timeout,
                                           version="7.4", server_type="redis")


def make_connection(conn_id: str, ws: Any = None, send_queue_size: int = 16,
                    metrics: GatewayMetrics | None = None) -> Connection:
    return Connection(conn_id, ws if ws is not None else FakeWebSocket(), send_queue_size, TokenBucket(100.0, 100),
                      metrics=metrics)


class RecordingConnection(Connection):
    """A Connection whose frames are decoded into `received` instead of being queued for a socket."""

    def __init__(self, conn_id: str) -> None:
        super().__init__(conn_id, FakeWebSocket(), send_queue_size=16, bucket=TokenBucket(100.0, 100))
        self.received: list[dict[str, Any]] = []

    def send(self, frame: bytes | str) -> None:
        if not self.closed:
            self.received.append(json.loads(frame))


def connected(registry: ConnectionRegistry, conn_id: str, user_pk: int | None = None) -> RecordingConnection:
    """A RecordingConnection added to `registry`, authenticated as `user_pk` if one is given."""
    conn = RecordingConnection(conn_id)
    registry.add(conn)
    if user_pk is not None:
        registry.set_session(conn, {"user_pk": user_pk})
    return conn


def make_settings(**overrides: Any) -> GatewaySettings:
    """Settings for a gateway under test: generous limits and timeouts unless a test narrows one."""
    values: dict[str, Any] = dict(
        redis_url="redis://fake-redis:6379/0",
        worker_topics=(WORKER_TOPIC,),
        response_topic="worker_response_test",
        allowed_origins=frozenset({ALLOWED_ORIGIN}),
        request_timeout=5.0,
        auth_timeout=5.0,
        ws_max_message_size=65536,
        max_in_flight=32,
        send_queue_size=64,
        rate_limit=1000.0,
        rate_burst=1000,
        ws_compression=False,
        ws_heartbeat=0.0,
        max_connections=1000,
    )
    values.update(overrides)
    return dataclasses.replace(GatewaySettings.from_env({}), **values)


def envelope(request: dict[str, Any], response: dict[str, Any], send_to: list[int] | None = None,
             session_data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A worker's reply envelope to a bus request, as PROTOCOL.md gives it."""
    return {
        "type": "success_response" if response.get("status") == "success" else "error_response",
        "request_id": request["request_id"],
        "send_to": send_to,
        "session_data": session_data,
        "response": response,
    }


# What a fake worker does with one bus request: (topic, envelope) to publish, or None to stay silent.
Answer = Callable[[dict[str, Any]], "tuple[str, dict[str, Any]] | None"]


def silent(request: dict[str, Any]) -> None:
    return None


class FakeWorker:
    """A worker on the fake Redis: subscribed to one topic, records each request, answers with `answer`."""

    def __init__(self, server: fakeredis.FakeServer, topic: str = WORKER_TOPIC, answer: Answer = silent) -> None:
        self.server = server
        self.topic = topic
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self._got_request = asyncio.Event()
        self._stopping = False

    async def __aenter__(self) -> "FakeWorker":
        self.redis = fakeredis.FakeAsyncRedis(server=self.server)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self.pubsub.subscribe(self.topic)
        self._task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        # fakeredis waits with asyncio.wait_for, which on Python 3.11 can swallow a cancellation
        # that lands just as a message arrives; the flag ends the loop even then.
        self._stopping = True
        self._task.cancel()
        await asyncio.wait({self._task})
        # Unsubscribe explicitly: fakeredis keeps a closed pubsub's subscriptions counted.
        await self.pubsub.unsubscribe()
        await self.pubsub.aclose()
        await self.redis.aclose()

    async def wait_for_requests(self, count: int) -> None:
        async def until_count() -> None:
            while len(self.requests) < count:
                self._got_request.clear()
                await self._got_request.wait()

        await asyncio.wait_for(until_count(), WAIT)

    async def _serve(self) -> None:
        while not self._stopping:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is None:
                continue
            request = json.loads(message["data"])
            self.requests.append(request)
            self._got_request.set()
            outgoing = self.answer(request)
            if outgoing is not None:
                topic, reply = outgoing
                await self.redis.publish(topic, json.dumps(reply))


class RoundTripRedis:
    """A publisher client on fakeredis that records its round trips: each one's list of
    (command, channel) as Redis would get them, in one pipeline or as a single command.

    While `gate` is set to an unset Event, every round trip waits for it once it is recorded,
    as one on its way to Redis; `failures` maps a round trip's index (from 0) to the error it
    raises; `reply` maps a channel to a fixed per-command result (e.g. an error in place, as
    `raise_on_error=False` gives)."""

    def __init__(self, server: fakeredis.FakeServer) -> None:
        self.inner = fakeredis.FakeAsyncRedis(server=server)
        self.round_trips: list[list[tuple[str, str]]] = []
        self.gate: asyncio.Event | None = None
        self.failures: dict[int, Exception] = {}
        self.reply: dict[str, Any] = {}
        self.recorded = asyncio.Event()

    async def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        index = len(self.round_trips)
        self.round_trips.append([(str(args[0]), str(args[1])) for args in commands])
        self.recorded.set()
        if self.gate is not None:
            await self.gate.wait()
        if index in self.failures:
            raise self.failures[index]
        results = []
        for args in commands:
            channel = str(args[1])
            results.append(self.reply[channel] if channel in self.reply else await self.inner.execute_command(*args))
        return results

    async def execute_command(self, *args: Any) -> Any:
        (result,) = await self._round_trip([args])
        if isinstance(result, Exception):
            raise result
        return result

    def pipeline(self, transaction: bool = True) -> "RoundTripPipeline":
        assert transaction is False, "publishes are not a transaction"
        return RoundTripPipeline(self)

    async def publish(self, channel: str, payload: Any) -> int:
        return await self.execute_command("PUBLISH", channel, payload)

    async def aclose(self) -> None:
        await self.inner.aclose()


class RoundTripPipeline:
    def __init__(self, redis: RoundTripRedis) -> None:
        self.redis = redis
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> "RoundTripPipeline":
        self.commands.append(args)
        return self

    def publish(self, channel: str, payload: Any) -> "RoundTripPipeline":
        return self.execute_command("PUBLISH", channel, payload)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert raise_on_error is False, "one publish's error must not fail the others"
        return await self.redis._round_trip(self.commands)
