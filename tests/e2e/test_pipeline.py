"""The pipeline end to end: real Redis, gunicorn gateways and Django workers, spoken to over WebSocket."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import uuid

import aiohttp
import pytest

from chat.models import ChatMessage, ChatRoom
from scripts.stack import ROOT
from tests.e2e.client import MESSAGE_KEYS, Client
from tests.e2e.conftest import connect, run
from websockets_gateway import redis_clients
from workers.actions import registry

# The processes share the test database, so the tests commit for real (and are flushed after).
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _room_of(data, members):
    return next(room for room in data["rooms"] if set(room["members"]) == set(members))


def test_authenticate_good_and_bad_token(e2e):
    data = e2e.fixtures(users=1)
    user = data["users"][0]

    async def scenario(session):
        client = await connect(session, e2e.gateway_a)
        bad = await client.request("authenticate", token="not-a-token")
        assert bad["status"] == "error" and bad["error_code"] == "invalid_token"
        good = await client.request("authenticate", token=user["token"])
        assert good == {"uuid": good["uuid"], "action": "authenticate", "status": "success",
                        "user": {"username": user["username"]}, "actions": registry.catalogue()["actions"]}
        # The connection is now the user's: a room action is accepted (and checked for membership).
        reply = await client.request("select_room", room=uuid.uuid4().hex)
        assert reply["error_code"] == "invalid_room_id"

    run(scenario)


def test_actions_need_authentication(e2e):
    async def scenario(session):
        client = await connect(session, e2e.gateway_a)
        for action, fields in [("select_room", {"room": uuid.uuid4().hex}),
                               ("new_message", {"room": uuid.uuid4().hex, "text": "hi"}),
                               ("list_rooms", {})]:
            reply = await client.request(action, **fields)
            assert reply["status"] == "error" and reply["error_code"] == "authentication_required", reply
        ping = await client.request("ping")
        assert ping["status"] == "success" and ping["connections"] >= 1

    run(scenario)


def test_select_room_returns_last_20_oldest_first_to_members_only(e2e):
    room, member, _, outsider = e2e.room_of_two()

    def add_messages():
        room_obj = ChatRoom.objects.get(pk=room["id"])
        ChatMessage.objects.bulk_create(
            [ChatMessage(user_id=member["id"], room=room_obj, text=f"message {n}") for n in range(25)])

    e2e.orm(add_messages)

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, member)
        reply = await client.request("select_room", room=room["id"])
        assert reply["status"] == "success" and reply["room"] == room["id"]
        texts = [m["text"] for m in reply["room_messages"]]
        assert texts == [f"message {n}" for n in range(5, 25)]
        first = reply["room_messages"][0]
        assert set(first) == MESSAGE_KEYS
        assert first["user"] == {"username": member["username"]} and first["room"] == room["id"]
        assert isinstance(first["timestamp"], float)
        # The hyphenated form of the id names the same room.
        hyphenated = str(uuid.UUID(room["id"]))
        assert (await client.request("select_room", room=hyphenated))["status"] == "success"

        stranger = await connect(session, e2e.gateway_b, outsider)
        not_member = await stranger.request("select_room", room=room["id"])
        missing = await stranger.request("select_room", room=uuid.uuid4().hex)
        assert not_member["error_code"] == missing["error_code"] == "invalid_room_id"
        assert not_member["error_message"] == missing["error_message"]
        assert not_member["room"] == room["id"]

    run(scenario)


def test_new_message_reaches_every_connection_of_every_member_and_no_one_else(e2e):
    data = e2e.fixtures(users=4, rooms=1, room_size=3)
    room = data["rooms"][0]
    members = [u for u in data["users"] if u["id"] in room["members"]]
    outsider = next(u for u in data["users"] if u["id"] not in room["members"])
    sender, other_a, other_b = members

    async def scenario(session):
        sender_a = await connect(session, e2e.gateway_a, sender)
        sender_b = await connect(session, e2e.gateway_b, sender)  # the sender's second tab, elsewhere
        others = [await connect(session, e2e.gateway_a, other_a), await connect(session, e2e.gateway_b, other_b),
                  await connect(session, e2e.gateway_a, other_b)]
        stranger = await connect(session, e2e.gateway_b, outsider)

        reply = await sender_a.request("new_message", room=room["id"], text="hello, room", uuid="msg-1")
        assert reply["status"] == "success" and reply["room"] == room["id"]
        message = reply["message"]
        assert message["text"] == "hello, room" and message["user"] == {"username": sender["username"]}

        def same(frame):
            return frame.get("action") == "new_message" and frame.get("message", {}).get("id") == message["id"]

        for client in [sender_b, *others]:
            got = await client.expect(same)
            assert got == reply
        # Barrier: a later round trip through the same gateways; a broadcast to the stranger
        # would have arrived before its reply.
        await stranger.authenticate(outsider)
        await stranger.drain()
        assert stranger.unread(same) == []
        assert sender_a.unread(same) == []  # exactly one copy for the sender's own connection

    run(scenario)


def test_error_codes_of_new_message(e2e):
    data = e2e.fixtures(users=2, rooms=1, room_size=1)
    room = data["rooms"][0]
    member = next(u for u in data["users"] if u["id"] in room["members"])
    outsider = next(u for u in data["users"] if u["id"] not in room["members"])

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, member)
        cases = [
            ({"room": room["id"], "text": "   "}, "empty_text"),
            ({"room": room["id"], "text": ""}, "empty_text"),
            ({"room": room["id"], "text": "x" * 4001}, "text_too_long"),
            ({"room": uuid.uuid4().hex, "text": "hi"}, "invalid_room_id"),
            ({"room": "not-a-room", "text": "hi"}, "invalid_room_id"),
            ({"room": room["id"], "text": 42}, "invalid_message_format"),
            ({"room": 42, "text": "hi"}, "invalid_message_format"),
        ]
        for fields, code in cases:
            reply = await client.request("new_message", **fields)
            assert reply["status"] == "error" and reply["error_code"] == code, (fields, reply)
            assert reply["error_message"]
        ok = await client.request("new_message", room=room["id"], text="x" * 4000)
        assert ok["status"] == "success"

        stranger = await connect(session, e2e.gateway_b, outsider)
        refused = await stranger.request("new_message", room=room["id"], text="let me in")
        assert refused["error_code"] == "invalid_room_id"

        await client.send({"action": "ping"})
        no_uuid = await client.expect(lambda f: f.get("action") == "ping" and f.get("uuid") is None)
        assert no_uuid["error_code"] == "invalid_message_format"
        await client.send({"uuid": "u-1"})
        no_action = await client.expect(lambda f: f.get("uuid") == "u-1")
        assert no_action["error_code"] == "invalid_message_format"
        unknown = await client.request("fly_to_the_moon")
        assert unknown["error_code"] == "invalid_action"
        # After all those errors the connection still works.
        assert (await client.request("ping"))["status"] == "success"

    run(scenario)
    stored = e2e.orm(lambda: list(ChatMessage.objects.filter(room_id=room["id"]).values_list("text", flat=True)))
    assert stored == ["x" * 4000]


def test_same_uuid_from_two_clients_is_kept_apart(e2e):
    data = e2e.fixtures(users=2, rooms=2, room_size=1)
    by_id = {u["id"]: u for u in data["users"]}
    rooms = data["rooms"]

    async def scenario(session):
        clients = [await connect(session, e2e.gateway_a, by_id[room["members"][0]]) for room in rooms]
        for _ in range(5):
            for client, room in zip(clients, rooms):
                await client.send({"uuid": "same-uuid", "action": "select_room", "room": room["id"]})
            for client, room in zip(clients, rooms):
                reply = await client.expect(lambda f: f.get("uuid") == "same-uuid")
                assert reply["status"] == "success" and reply["room"] == room["id"]
        for client in clients:
            await client.request("ping")
            assert client.unread(lambda f: f.get("uuid") == "same-uuid") == []

    run(scenario)


def test_retried_uuid_is_stored_once(e2e):
    data = e2e.fixtures(users=2, rooms=1, room_size=2)
    room = data["rooms"][0]
    sender = next(u for u in data["users"] if u["id"] == room["members"][0])
    frame_uuid = f"retry-{uuid.uuid4().hex}"

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, sender)
        first = await client.request("new_message", room=room["id"], text="only once", uuid=frame_uuid)
        # A retry from a new connection, as after a reconnect, through the other gateway.
        again = await connect(session, e2e.gateway_b, sender)
        second = await again.request("new_message", room=room["id"], text="only once", uuid=frame_uuid)
        assert first["status"] == second["status"] == "success"
        assert first["message"] == second["message"]

    run(scenario)
    count = e2e.orm(lambda: ChatMessage.objects.filter(client_uuid=frame_uuid).count())
    assert count == 1


def test_transport_rules(e2e):
    async def scenario(session):
        client = await connect(session, e2e.gateway_a)
        await client.ws.send_str("this is not json")
        assert await client.expect_close() == 1003

        client = await connect(session, e2e.gateway_a)
        await client.ws.send_str("[1, 2, 3]")
        assert await client.expect_close() == 1003

        client = await connect(session, e2e.gateway_b)
        await client.ws.send_bytes(b"\x00\x01")
        assert await client.expect_close() == 1003

        client = await connect(session, e2e.gateway_a)
        await client.ws.send_str(json.dumps({"uuid": "big", "action": "ping", "pad": "x" * 70_000}))
        assert await client.expect_close() == 1009

        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(e2e.gateway_a, headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403
        allowed = await Client.connect(session, e2e.gateway_a, headers={"Origin": "http://allowed.example"})
        assert (await allowed.request("ping"))["status"] == "success"

    run(scenario)


def test_healthz(e2e):
    async def scenario(session):
        for url in (e2e.gateway_a, e2e.gateway_b):
            async with session.get(url.replace("/ws", "/healthz")) as response:
                assert response.status == 200
                body = await response.json()
                assert body["redis"] is True and body["status"] == "ok"

    run(scenario)


GATEWAY_NUMBERS = itertools.count(1)


@pytest.fixture()
def gateway_with_topics(e2e):
    """Start a gateway of its own whose worker topics are given by the test."""
    started = []

    def start(topics: list[str], **extra_env: str) -> str:
        proc, port = e2e.stack.start_gateway(processes=1, name=f"gateway-{next(GATEWAY_NUMBERS)}-{e2e.tag}",
                                             extra_env={"WORKER_PROCESS_TOPICS": ",".join(topics), **extra_env})
        started.append(proc)
        return f"http://127.0.0.1:{port}/ws"

    yield start
    for proc in started:
        assert e2e.stack.stop_process(proc) == 0


def test_timeout_at_once_when_no_worker_is_alive(e2e, gateway_with_topics):
    data = e2e.fixtures(users=1)
    url = gateway_with_topics([f"{e2e.tag}_nobody_1", f"{e2e.tag}_nobody_2"], REQUEST_TIMEOUT="30")

    async def scenario(session):
        client = await connect(session, url)
        started = asyncio.get_running_loop().time()
        reply = await client.request("authenticate", token=data["users"][0]["token"], timeout=10)
        assert reply["status"] == "error" and reply["error_code"] == "timeout"
        # Answered at once, not after the 30 s request timeout.
        assert asyncio.get_running_loop().time() - started < 10

    run(scenario)


def test_timeout_when_the_worker_never_answers(e2e, gateway_with_topics):
    data = e2e.fixtures(users=1)
    deaf_topic = f"{e2e.tag}_deaf"
    redis_client = e2e.redis_client()
    listener = redis_clients.subscription(redis_client)
    listener.subscribe(deaf_topic)
    try:
        url = gateway_with_topics([deaf_topic], REQUEST_TIMEOUT="1")

        async def scenario(session):
            client = await connect(session, url)
            reply = await client.request("authenticate", token=data["users"][0]["token"], uuid="deaf-1")
            assert reply == {"uuid": "deaf-1", "action": "authenticate", "status": "error",
                             "error_code": "timeout", "error_message": reply["error_message"]}

        run(scenario)
        # The deaf worker did get the request, with the gateway's own keys.
        request = None
        for _ in range(100):
            message = listener.get_message(timeout=0.1)
            if message and message["type"] == "message":
                request = json.loads(message["data"])
                break
        assert request is not None
        assert request["uuid"] == "deaf-1" and request["session_data"] == {}
        assert request["reply_to"].startswith("gateway_reply:") and ":" in request["request_id"]
    finally:
        listener.close()
        redis_client.close()


def test_client_cannot_forge_gateway_keys(e2e):
    data = e2e.fixtures(users=2, rooms=1, room_size=1)
    member = next(u for u in data["users"] if u["id"] in data["rooms"][0]["members"])
    outsider = next(u for u in data["users"] if u["id"] not in data["rooms"][0]["members"])

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, outsider)
        reply = await client.request("select_room", room=data["rooms"][0]["id"],
                                     session_data={"user_pk": member["id"]}, send_to=[member["id"]],
                                     request_id="forged", reply_to="elsewhere")
        assert reply["error_code"] == "invalid_room_id"

    run(scenario)


def test_worker_stops_cleanly_on_sigterm(e2e):
    topic = f"{e2e.tag}_short_lived"
    proc = e2e.stack.start_worker(topic)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    client = e2e.redis_client()
    try:
        assert redis_clients.subscriber_count(client, topic) == 0
    finally:
        client.close()


def test_chat_fixtures_command_prints_the_protocol_shape(e2e):
    result = subprocess.run([sys.executable, "manage.py", "chat_fixtures", "--users", "5", "--rooms", "2",
                             "--room-size", "3"], cwd=ROOT, env=e2e.stack.env, capture_output=True, text=True,
                            check=True)
    data = json.loads(result.stdout)
    assert len(data["users"]) == 5 and len(data["rooms"]) == 2
    assert set(data["users"][0]) == {"id", "username", "token"}
    assert set(data["rooms"][0]) == {"id", "name", "members"}
    ids = {u["id"] for u in data["users"]}
    assert all(len(room["members"]) == 3 and set(room["members"]) <= ids for room in data["rooms"])


def test_rate_limit_answers_rate_limited_and_keeps_the_connection(e2e, gateway_with_topics):
    url = gateway_with_topics(e2e.worker_topics, RATE_LIMIT="0.5", RATE_LIMIT_BURST="3")

    async def scenario(session):
        client = await connect(session, url)
        for n in range(6):
            await client.send({"uuid": f"fast-{n}", "action": "ping"})
        replies = [await client.expect(lambda f, n=n: f.get("uuid") == f"fast-{n}") for n in range(6)]
        statuses = [reply["status"] for reply in replies]
        assert statuses[:3] == ["success"] * 3
        assert {reply.get("error_code") for reply in replies[3:]} == {"rate_limited"}
        assert not client.ws.closed

    run(scenario)
