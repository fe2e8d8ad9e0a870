"""The `/ws` and `/healthz` handlers, served by the real application over a local socket.

Redis is fakeredis: the `redis_server` fixture (conftest.py) patches `Redis.from_url` so that
the gateway's clients and the fake workers share one in-process server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer

from websockets_gateway import identity
from websockets_gateway.app import close_connections, create_app
from websockets_gateway.bus import NoWorkerAvailable
from websockets_gateway.connection import (
    CLOSE_AUTH_TIMEOUT, CLOSE_GOING_AWAY, CLOSE_UNSUPPORTED_DATA,
)
from websockets_gateway.state import GATEWAY_KEY

from tests.raw_websocket import OPCODE_CLOSE, OPCODE_TEXT, RawWebSocket

from .fakes import ALLOWED_ORIGIN, PROTOCOL_ACTIONS, WAIT, FakeWorker, envelope, make_settings, run, wait_until

CLOSE_MESSAGE_TOO_BIG = 1009


@contextlib.asynccontextmanager
async def serving(**overrides):
    """The gateway app with test settings, started; yields (client, app)."""
    app = create_app(make_settings(**overrides))
    async with TestClient(TestServer(app)) as client:
        yield client, app


async def receive_json(ws):
    message = await ws.receive(timeout=WAIT)
    assert message.type == WSMsgType.TEXT, message
    return json.loads(message.data)


async def receive_close(ws):
    message = await ws.receive(timeout=WAIT)
    assert message.type == WSMsgType.CLOSE, message
    return message.data, message.extra


async def request(ws, frame):
    await ws.send_str(json.dumps(frame))
    return await receive_json(ws)




def authenticating(users):
    """A worker's answer: authenticate by token ({token: user_pk}); new_message broadcast to user 1 and 2;
    an action that is not the protocol's, invalid_action."""
    def answer(bus_request):
        action = bus_request["action"]
        if action == "authenticate":
            user_pk = users.get(bus_request.get("token"))
            if user_pk is None:
                reply = {"uuid": bus_request["uuid"], "action": action, "status": "error",
                         "error_code": "invalid_token", "error_message": "Invalid token"}
                return bus_request["reply_to"], envelope(bus_request, reply)
            reply = {"uuid": bus_request["uuid"], "action": action, "status": "success",
                     "user": {"username": f"user{user_pk}"}}
            return bus_request["reply_to"], envelope(bus_request, reply, session_data={"user_pk": user_pk})
        if action == "new_message":
            reply = {"uuid": bus_request["uuid"], "action": action, "room": bus_request["room"],
                     "status": "success", "message": {"id": 1, "text": bus_request["text"]}}
            return "worker_response_test", envelope(bus_request, reply, send_to=[1])
        if action not in PROTOCOL_ACTIONS:
            reply = {"uuid": bus_request["uuid"], "action": action, "status": "error",
                     "error_code": "invalid_action", "error_message": "Unknown action"}
            return bus_request["reply_to"], envelope(bus_request, reply)
        reply = {"uuid": bus_request["uuid"], "action": action, "status": "success",
                 "session_seen": bus_request["session_data"]}
        return bus_request["reply_to"], envelope(bus_request, reply)

    return answer


# /healthz

def test_healthz_is_200_with_json_while_redis_is_up(redis_server):
    async def scenario():
        async with serving() as (client, app):
            response = await client.get("/healthz")
            assert response.status == 200
            body = await response.json()
            assert body["status"] == "ok"
            assert body["redis"] is True
            assert body["gateway_id"] == app[GATEWAY_KEY].gateway_id
            assert body["gateway_id"].startswith(identity.default_base() + "-")
            assert body["connections"] == 0
            assert body["in_flight"] == 0

    run(scenario())


def test_healthz_counts_open_connections(redis_server):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws")
            await request(ws, {"uuid": "p", "action": "ping"})
            body = await (await client.get("/healthz")).json()
            assert body["connections"] == 1

    run(scenario())


def test_healthz_is_503_when_redis_does_not_answer(redis_server):
    async def scenario():
        async with serving() as (client, app):
            async def no_pong():
                return False

            app[GATEWAY_KEY].bus.ping = no_pong
            response = await client.get("/healthz")
            assert response.status == 503
            body = await response.json()
            assert body["status"] == "unavailable"
            assert body["redis"] is False

    run(scenario())


# Handshake

def test_a_foreign_origin_is_refused_with_403(redis_server):
    async def scenario():
        async with serving() as (client, app):
            with pytest.raises(WSServerHandshakeError) as refused:
                await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
            assert refused.value.status == 403
            assert len(app[GATEWAY_KEY].registry) == 0

    run(scenario())


def test_a_full_gateway_refuses_the_handshake_with_503(redis_server):
    async def scenario():
        async with serving(max_connections=2) as (client, app):
            open_ones = [await client.ws_connect("/ws") for _ in range(2)]
            with pytest.raises(WSServerHandshakeError) as refused:
                await client.ws_connect("/ws")
            assert refused.value.status == 503
            assert len(app[GATEWAY_KEY].registry) == 2
            await open_ones[0].close()
            await wait_until(lambda: len(app[GATEWAY_KEY].registry) == 1)
            again = await client.ws_connect("/ws")
            assert (await request(again, {"uuid": "p", "action": "ping"}))["connections"] == 2

    run(scenario())


def test_connections_past_max_connections_per_ip_are_refused_with_503(redis_server):
    async def scenario():
        async with serving(max_connections_per_ip=2) as (client, app):
            gateway = app[GATEWAY_KEY]
            open_ones = [await client.ws_connect("/ws") for _ in range(2)]
            with pytest.raises(WSServerHandshakeError) as refused:
                await client.ws_connect("/ws")
            assert refused.value.status == 503
            # Not behind a trusted proxy: the header is the client's own, and changes nothing.
            with pytest.raises(WSServerHandshakeError):
                await client.ws_connect("/ws", headers={"X-Forwarded-For": "198.51.100.1"})
            await open_ones[0].close()
            await wait_until(lambda: len(gateway.registry) == 1)
            again = await client.ws_connect("/ws")
            assert (await request(again, {"uuid": "p", "action": "ping"}))["connections"] == 2
            await again.close()
            await open_ones[1].close()
            await wait_until(lambda: len(gateway.registry) == 0)
            assert len(gateway.per_address) == 0  # an address with no connection is forgotten

    run(scenario())


def test_behind_a_trusted_proxy_the_limit_and_the_logs_use_the_forwarded_address(redis_server, caplog):
    caplog.set_level("INFO", logger="websockets_gateway")

    def via_proxy(address):
        return {"X-Forwarded-For": f"6.6.6.6, {address}"}  # the left entry is the client's own claim

    async def scenario():
        async with serving(max_connections_per_ip=1, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)) \
                as (client, app):
            first = await client.ws_connect("/ws", headers=via_proxy("198.51.100.1"))
            with pytest.raises(WSServerHandshakeError) as refused:
                await client.ws_connect("/ws", headers=via_proxy("198.51.100.1"))
            assert refused.value.status == 503
            other = await client.ws_connect("/ws", headers=via_proxy("198.51.100.2"))
            with pytest.raises(WSServerHandshakeError) as forbidden:
                await client.ws_connect("/ws", headers={"Origin": "http://evil.example",
                                                        **via_proxy("198.51.100.3")})
            assert forbidden.value.status == 403
            for ws in (first, other):
                assert (await request(ws, {"uuid": "p", "action": "ping"}))["status"] == "success"

    run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert "opened from 198.51.100.1 (through proxy 127.0.0.1)" in messages
    assert "opened from 198.51.100.2 (through proxy 127.0.0.1)" in messages
    assert "refused a connection from 198.51.100.1: 1 connections open from it" in messages
    assert "refused handshake from origin 'http://evil.example' (client 198.51.100.3)" in messages
    assert not any("6.6.6.6" in message for message in messages)


@pytest.mark.parametrize("headers", [{"Origin": ALLOWED_ORIGIN}, {}], ids=["allowed-origin", "no-origin"])
def test_an_allowed_origin_or_no_origin_is_accepted(redis_server, headers):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws", headers=headers)
            reply = await request(ws, {"uuid": "p1", "action": "ping"})
            assert reply["status"] == "success"

    run(scenario())


def test_any_origin_when_allowed_origins_is_star(redis_server):
    async def scenario():
        async with serving(allowed_origins=None) as (client, app):
            ws = await client.ws_connect("/ws", headers={"Origin": "http://anywhere.example"})
            assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"

    run(scenario())


# The subprotocol: chat.v1 for a client that asks for it, version 1 without one for any other

@pytest.mark.parametrize("asked, answered", [
    (("chat.v1",), "chat.v1"),
    (("chat.v2", "chat.v1"), "chat.v1"),
    ((), None),
    (("chat.v2",), None),
], ids=["chat.v1", "chat.v2-then-chat.v1", "none", "only-unknown"])
def test_the_handshake_echoes_chat_v1_when_asked_and_serves_version_1_to_every_client(redis_server, asked, answered):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws", protocols=asked)
            assert ws.protocol == answered  # the handshake's Sec-WebSocket-Protocol, or None without one
            # The same protocol either way: a client that asked for none, or only for others, is served version 1.
            reply = await request(ws, {"uuid": "p1", "action": "ping"})
            assert reply["status"] == "success"

    run(scenario())


# Transport errors close the connection

@pytest.mark.parametrize("text", ["not json", "[1, 2]", "42", '"hello"'], ids=["not-json", "array", "number", "string"])
def test_a_frame_that_is_not_a_json_object_closes_with_1003(redis_server, text):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws")
            await ws.send_str(text)
            code, reason = await receive_close(ws)
            assert code == CLOSE_UNSUPPORTED_DATA
            assert "JSON" in reason
            await wait_until(lambda: len(app[GATEWAY_KEY].registry) == 0)

    run(scenario())


def test_a_binary_frame_closes_with_1003(redis_server):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws")
            await ws.send_bytes(b'{"uuid": "u1", "action": "ping"}')
            code, reason = await receive_close(ws)
            assert code == CLOSE_UNSUPPORTED_DATA
            assert "Binary" in reason

    run(scenario())


def test_an_oversized_frame_closes_with_1009(redis_server):
    async def scenario():
        async with serving(ws_max_message_size=1024) as (client, app):
            ws = await client.ws_connect("/ws")
            # Just under the limit is fine.
            fits = json.dumps({"uuid": "u1", "action": "ping", "pad": "x" * 900})
            assert len(fits) <= 1024
            assert (await request(ws, json.loads(fits)))["status"] == "success"
            await ws.send_str(json.dumps({"uuid": "u2", "action": "ping", "pad": "x" * 2000}))
            code, _ = await receive_close(ws)
            assert code == CLOSE_MESSAGE_TOO_BIG

    run(scenario())


@pytest.mark.parametrize("enabled", [False, True])
def test_per_message_compression_is_off_unless_configured(redis_server, enabled):
    # Off by default: a deflate context per connection costs memory, and a compressed frame can
    # inflate far past WS_MAX_MESSAGE_SIZE on the wire (a compression bomb).
    async def scenario():
        overrides = {"ws_compression": True} if enabled else {}
        async with serving(**overrides) as (client, app):
            ws = await client.ws_connect("/ws", compress=15)
            assert ws.compress == (15 if enabled else 0)
            assert (await request(ws, {"uuid": "u1", "action": "ping"}))["status"] == "success"

    run(scenario())


def test_a_connection_that_does_not_authenticate_in_time_is_closed_with_4001(redis_server):
    async def scenario():
        async with serving(auth_timeout=0.2) as (client, app):
            ws = await client.ws_connect("/ws")
            # Pings are answered meanwhile, but do not count as authenticating.
            assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"
            code, reason = await receive_close(ws)
            assert code == CLOSE_AUTH_TIMEOUT
            assert reason == "Authentication timeout"

    run(scenario())


def test_the_auth_deadline_closes_only_unauthenticated_connections(redis_server):
    async def scenario():
        async with serving(auth_timeout=0.3) as (client, app):
            async with FakeWorker(redis_server, answer=authenticating({"alice-token": 1})):
                anonymous = await client.ws_connect("/ws")
                authenticated = await client.ws_connect("/ws")
                reply = await request(authenticated, {"uuid": "a1", "action": "authenticate", "token": "alice-token"})
                assert reply["status"] == "success"
                assert await receive_close(anonymous) == (CLOSE_AUTH_TIMEOUT, "Authentication timeout")
                # Past its own deadline too (both opened together): still served.
                assert (await request(authenticated, {"uuid": "p1", "action": "ping"}))["status"] == "success"
                assert len(app[GATEWAY_KEY].registry) == 1 and len(app[GATEWAY_KEY].auth_deadlines) == 0

    run(scenario())


def test_shutdown_closes_client_connections_with_1001(redis_server):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws")
            await request(ws, {"uuid": "p1", "action": "ping"})
            # Read while the shutdown waits: the client's Close reply ends the handshake (unread,
            # the close would wait its whole CLOSE_TIMEOUT and then abort the socket).
            closing = asyncio.create_task(close_connections(app))
            code, _ = await receive_close(ws)
            assert code == CLOSE_GOING_AWAY
            await asyncio.wait_for(closing, WAIT)

    run(scenario())


@pytest.mark.parametrize("closed_by", ["shutdown", "auth_timeout"])
def test_a_close_waits_for_the_clients_close_reply_and_drops_the_frames_before_it(redis_server, closed_by):
    # Closed while its handler waited for a frame (the usual case). aiohttp would end the TCP
    # connection right after its Close frame; a client that had frames in flight then got a reset
    # that could destroy the Close frame (it saw 1006). The handshake now waits for the reply.
    async def scenario():
        async with serving(auth_timeout=0.2 if closed_by == "auth_timeout" else 5.0) as (client, app):
            raw = await RawWebSocket.connect("127.0.0.1", client.port, WAIT)
            await wait_until(lambda: len(app[GATEWAY_KEY].registry) == 1)
            shutdown = asyncio.create_task(close_connections(app)) if closed_by == "shutdown" else None
            opcode, payload = await raw.receive()
            expected = CLOSE_GOING_AWAY if closed_by == "shutdown" else CLOSE_AUTH_TIMEOUT
            assert (opcode, int.from_bytes(payload[:2], "big")) == (OPCODE_CLOSE, expected)
            # The socket stays open for the reply: the client's frames still in flight are read.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(raw.reader.read(1), 0.3)
            raw.send(OPCODE_TEXT, json.dumps({"uuid": "late", "action": "ping"}).encode())
            raw.send(OPCODE_CLOSE, payload[:2])
            # The frame sent after the Close was dropped unanswered; the reply ended the connection.
            assert await asyncio.wait_for(raw.reader.read(), WAIT) == b""
            if shutdown is not None:
                await asyncio.wait_for(shutdown, WAIT)
            await wait_until(lambda: len(app[GATEWAY_KEY].registry) == 0)
            raw.writer.close()

    run(scenario())


@pytest.mark.parametrize("burst", [100, 1000])
def test_a_burst_in_one_write_gets_one_reply_per_frame_and_the_connection_stays_open(redis_server, burst):
    # More frames than the send queue holds, all read from one write: each is answered at once
    # (ping, or rate_limited past the bucket). The read loop pauses while half the queue waits
    # for the writer, so the replies never overflow it (it used to close the sender with 4008).
    async def scenario():
        async with serving(send_queue_size=8, rate_limit=20.0, rate_burst=5) as (client, app):
            raw = await RawWebSocket.connect("127.0.0.1", client.port, WAIT)
            for n in range(burst):
                raw.send(OPCODE_TEXT, json.dumps({"uuid": f"b{n}", "action": "ping"}).encode())
            replies = [await raw.receive_text() for _ in range(burst)]
            assert [reply["uuid"] for reply in replies] == [f"b{n}" for n in range(burst)]
            statuses = [reply.get("error_code", reply["status"]) for reply in replies]
            assert set(statuses) == {"success", "rate_limited"}
            assert statuses.count("success") >= 5
            assert len(app[GATEWAY_KEY].registry) == 1
            gateway = app[GATEWAY_KEY]
            assert gateway.metrics.registry.get_sample_value(
                "chat_gateway_slow_client_disconnects_total", {"gateway_id": gateway.gateway_id}) == 0
            # Usable again once the bucket refills: a ping (retried while still limited) succeeds.
            for attempt in range(50):
                await asyncio.sleep(0.1)
                raw.send(OPCODE_TEXT, json.dumps({"uuid": f"after{attempt}", "action": "ping"}).encode())
                reply = await raw.receive_text()
                assert reply["uuid"] == f"after{attempt}"
                if reply["status"] == "success":
                    break
            assert reply["status"] == "success"
            raw.writer.close()

    run(scenario())


# Frames answered by the gateway itself

def test_ping_is_answered_with_the_number_of_connections(redis_server):
    async def scenario():
        async with serving() as (client, app):
            first = await client.ws_connect("/ws")
            reply = await request(first, {"uuid": "p1", "action": "ping"})
            assert reply["uuid"] == "p1" and reply["action"] == "ping" and reply["status"] == "success"
            assert reply["connections"] == 1
            assert isinstance(reply["server_time"], float)
            second = await client.ws_connect("/ws")
            assert (await request(second, {"uuid": "p2", "action": "ping"}))["connections"] == 2

    run(scenario())


def test_select_room_before_authenticating_is_refused(redis_server):
    async def scenario():
        async with serving() as (client, app):
            async with FakeWorker(redis_server) as worker:
                ws = await client.ws_connect("/ws")
                reply = await request(ws, {"uuid": "s1", "action": "select_room", "room": "r1"})
                assert reply == {"uuid": "s1", "action": "select_room", "room": "r1", "status": "error",
                                 "error_code": "authentication_required", "error_message": "Authenticate first"}
                # The connection stays open, and the worker never saw the frame.
                assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"
                assert worker.requests == []

    run(scenario())


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"action": "ping"}, "invalid_message_format"),
        ({"uuid": "", "action": "ping"}, "invalid_message_format"),
        ({"uuid": "u1"}, "invalid_message_format"),
        # Before authenticating: only authenticate and ping go on, whatever the action is.
        ({"uuid": "u1", "action": "explode"}, "authentication_required"),
    ],
)
def test_a_bad_frame_gets_an_error_reply_and_the_connection_stays_open(redis_server, frame, code):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws")
            reply = await request(ws, frame)
            assert reply["status"] == "error"
            assert reply["error_code"] == code
            assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"

    run(scenario())


# Frames that go to a worker

def test_an_unknown_action_goes_to_a_worker_which_answers_invalid_action(redis_server):
    # The gateway keeps no list of actions: a worker's registry decides.
    async def scenario():
        async with serving() as (client, app):
            async with FakeWorker(redis_server, answer=authenticating({"good": 1})) as worker:
                ws = await client.ws_connect("/ws")
                assert (await request(ws, {"uuid": "a1", "action": "authenticate", "token": "good"}))["status"] \
                    == "success"
                reply = await request(ws, {"uuid": "x1", "action": "explode", "room": "r"})
                assert (reply["uuid"], reply["action"], reply["error_code"]) == ("x1", "explode", "invalid_action")
                assert [r["action"] for r in worker.requests] == ["authenticate", "explode"]
                assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"

    run(scenario())


def test_a_frame_with_no_worker_subscribed_gets_timeout_at_once(redis_server):
    async def scenario():
        async with serving(request_timeout=60.0) as (client, app):
            ws = await client.ws_connect("/ws")
            reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "t"})
            assert reply["uuid"] == "a1"
            assert reply["action"] == "authenticate"
            assert reply["error_code"] == "timeout"
            assert reply["error_message"] == "No worker is available"
            assert len(app[GATEWAY_KEY].pending) == 0

    run(scenario())


def test_a_worker_authenticates_the_connection(redis_server):
    async def scenario():
        async with serving() as (client, app):
            gateway = app[GATEWAY_KEY]
            async with FakeWorker(redis_server, answer=authenticating({"alice-token": 1})) as worker:
                ws = await client.ws_connect("/ws")
                reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "alice-token",
                                           "session_data": {"user_pk": 999}})
                assert reply == {"uuid": "a1", "action": "authenticate", "status": "success",
                                 "user": {"username": "user1"}}
                (conn,) = gateway.registry.of_user(1)
                assert conn.session_data == {"user_pk": 1}
                assert len(gateway.pending) == 0

                (bus_request,) = worker.requests
                assert bus_request["session_data"] == {}  # never the client's own
                assert bus_request["reply_to"] == gateway.bus.reply_topic
                assert gateway.pending.owns(bus_request["request_id"])
                assert bus_request["token"] == "alice-token"

                # Now authenticated: other actions reach the worker, with the gateway's session data.
                reply = await request(ws, {"uuid": "l1", "action": "list_rooms"})
                assert reply["session_seen"] == {"user_pk": 1}

    run(scenario())


def test_an_invalid_token_leaves_the_connection_anonymous(redis_server):
    async def scenario():
        async with serving() as (client, app):
            async with FakeWorker(redis_server, answer=authenticating({})):
                ws = await client.ws_connect("/ws")
                reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "wrong"})
                assert reply["error_code"] == "invalid_token"
                assert app[GATEWAY_KEY].registry.user_count() == 0
                reply = await request(ws, {"uuid": "s1", "action": "select_room", "room": "r"})
                assert reply["error_code"] == "authentication_required"

    run(scenario())


def test_a_broadcast_reaches_every_connection_of_send_to_and_no_one_else(redis_server):
    async def scenario():
        async with serving() as (client, app):
            users = {"alice": 1, "bob": 2}
            async with FakeWorker(redis_server, answer=authenticating(users)):
                alice_phone, alice_laptop, bob = [await client.ws_connect("/ws") for _ in range(3)]
                for ws, token in ((alice_phone, "alice"), (alice_laptop, "alice"), (bob, "bob")):
                    assert (await request(ws, {"uuid": "a", "action": "authenticate", "token": token}))["status"] == "success"
                assert len(app[GATEWAY_KEY].registry.of_user(1)) == 2

                sent = await request(alice_phone, {"uuid": "m1", "action": "new_message", "room": "r1", "text": "hi"})
                assert sent["message"] == {"id": 1, "text": "hi"}
                assert await receive_json(alice_laptop) == sent
                # The broadcast was routed to every recipient at once, before alice's phone got it:
                # had bob been sent it, it would come before the answer to his ping.
                assert (await request(bob, {"uuid": "p1", "action": "ping"}))["action"] == "ping"

    run(scenario())


def test_rate_limit_answers_rate_limited_and_keeps_the_connection(redis_server):
    async def scenario():
        async with serving(rate_limit=0.01, rate_burst=2) as (client, app):
            ws = await client.ws_connect("/ws")
            assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"
            assert (await request(ws, {"uuid": "p2", "action": "ping"}))["status"] == "success"
            for uuid in ("p3", "p4"):
                reply = await request(ws, {"uuid": uuid, "action": "ping"})
                assert reply["uuid"] == uuid
                assert reply["status"] == "error"
                assert reply["error_code"] == "rate_limited"
            assert not ws.closed
            assert len(app[GATEWAY_KEY].registry) == 1

    run(scenario())


def test_a_second_request_beyond_max_in_flight_is_rate_limited(redis_server):
    async def scenario():
        async with serving(max_in_flight=1, request_timeout=60.0) as (client, app):
            async with FakeWorker(redis_server) as worker:  # never answers
                ws = await client.ws_connect("/ws")
                await ws.send_str(json.dumps({"uuid": "a1", "action": "authenticate", "token": "t"}))
                await worker.wait_for_requests(1)
                reply = await request(ws, {"uuid": "a2", "action": "authenticate", "token": "t"})
                assert reply["uuid"] == "a2"
                assert reply["error_code"] == "rate_limited"
                assert reply["error_message"] == "Too many requests in flight"
                assert len(worker.requests) == 1
                assert len(app[GATEWAY_KEY].pending) == 1
                # Pings need no worker and are still answered.
                assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"

    run(scenario())


def test_a_request_no_worker_answers_gets_timeout(redis_server):
    async def scenario():
        async with serving(request_timeout=0.2) as (client, app):
            async with FakeWorker(redis_server) as worker:  # subscribed, never answers
                ws = await client.ws_connect("/ws")
                reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "t"})
                assert reply == {"uuid": "a1", "action": "authenticate", "status": "error",
                                 "error_code": "timeout", "error_message": "No worker answered in time"}
                assert len(worker.requests) == 1
                assert len(app[GATEWAY_KEY].pending) == 0

    run(scenario())


def test_a_closed_connection_forgets_its_requests(redis_server):
    async def scenario():
        async with serving(request_timeout=60.0) as (client, app):
            gateway = app[GATEWAY_KEY]
            async with FakeWorker(redis_server) as worker:
                ws = await client.ws_connect("/ws")
                await ws.send_str(json.dumps({"uuid": "a1", "action": "authenticate", "token": "t"}))
                await worker.wait_for_requests(1)
                assert len(gateway.pending) == 1
                await ws.close()
                await wait_until(lambda: len(gateway.registry) == 0)
                assert len(gateway.pending) == 0

    run(scenario())


def test_a_frame_that_redis_cannot_take_gets_timeout_at_once(redis_server):
    async def scenario():
        async with serving(request_timeout=60.0) as (client, app):
            gateway = app[GATEWAY_KEY]
            ws = await client.ws_connect("/ws")
            redis_server.connected = False  # every command to Redis now fails with a connection error
            reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "t"})
            assert (reply["uuid"], reply["error_code"]) == ("a1", "timeout")
            assert reply["error_message"] == "Message bus unavailable"
            assert len(gateway.pending) == 0
            # The connection stays usable.
            assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"
            redis_server.connected = True

    run(scenario())


def test_a_frame_whose_deadline_passes_during_a_failed_publish_gets_one_reply(redis_server):
    async def scenario():
        async with serving(request_timeout=0.05) as (client, app):
            gateway = app[GATEWAY_KEY]

            async def slow_then_no_worker(bus_request):
                # Hold the publish until the deadline has answered the request.
                await wait_until(lambda: len(gateway.pending) == 0)
                raise NoWorkerAvailable("No worker is listening on any topic")

            gateway.bus.publish_request = slow_then_no_worker
            ws = await client.ws_connect("/ws")
            reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "t"})
            assert (reply["uuid"], reply["error_code"]) == ("a1", "timeout")
            assert reply["error_message"] == "No worker answered in time"
            # Nothing else for a1: the next frame the client gets answers its ping.
            assert (await request(ws, {"uuid": "p1", "action": "ping"}))["uuid"] == "p1"

    run(scenario())


async def _hold_every_publisher_connection(publisher_pools):
    """Take every connection of the publisher's pool, as a burst of publishes stuck on Redis would."""
    [pool] = publisher_pools
    return pool, [await pool.get_connection() for _ in range(pool.max_connections)]


def test_requests_past_the_publishers_connections_queue_and_are_answered(redis_server, publisher_pools):
    async def scenario():
        async with serving(request_timeout=5.0) as (client, app):
            gateway = app[GATEWAY_KEY]
            async with FakeWorker(redis_server, answer=authenticating({"alice-token": 1})) as worker:
                ws = await client.ws_connect("/ws")
                pool, held = await _hold_every_publisher_connection(publisher_pools)
                await ws.send_str(json.dumps({"uuid": "a1", "action": "authenticate", "token": "alice-token"}))
                await wait_until(lambda: len(gateway.pending) == 1)
                await asyncio.sleep(0.1)
                assert worker.requests == []  # waiting for a connection, not refused
                for connection in held:
                    await pool.release(connection)
                reply = await receive_json(ws)
                assert (reply["uuid"], reply["status"]) == ("a1", "success")

    run(scenario())


def test_a_request_waiting_for_a_connection_past_its_deadline_gets_one_timeout(redis_server, publisher_pools):
    async def scenario():
        async with serving(request_timeout=0.2) as (client, app):
            gateway = app[GATEWAY_KEY]
            ws = await client.ws_connect("/ws")
            pool, held = await _hold_every_publisher_connection(publisher_pools)
            reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "t"})
            # The deadline and the pool's wait (min(REQUEST_TIMEOUT, 5 s)) end together: whichever
            # answers first, the client hears it once.
            assert (reply["uuid"], reply["error_code"]) == ("a1", "timeout")
            assert reply["error_message"] in ("No worker answered in time", "Message bus unavailable")
            await wait_until(lambda: len(gateway.pending) == 0)
            for connection in held:
                await pool.release(connection)
            assert (await request(ws, {"uuid": "p1", "action": "ping"}))["uuid"] == "p1"

    run(scenario())
