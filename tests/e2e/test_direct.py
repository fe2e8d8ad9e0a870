"""Direct messages end to end: one room per pair of users, made on first use, even under a race."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from chat.models import ChatMessage, ChatRoom
from tests.e2e.client import MESSAGE_KEYS
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def members_of(*users):
    return [{"username": name} for name in sorted(user["username"] for user in users)]


def direct_rooms(rooms):
    return [room for room in rooms if room["is_direct"]]


def test_direct_message_reaches_every_connection_of_both_users(e2e):
    data = e2e.fixtures(users=3)
    alice, bob, outsider = data["users"]

    async def scenario(session):
        alice_a = await connect(session, e2e.gateway_a, alice)
        alice_b = await connect(session, e2e.gateway_b, alice)
        bob_a = await connect(session, e2e.gateway_a, bob)
        bob_b = await connect(session, e2e.gateway_b, bob)
        stranger = await connect(session, e2e.gateway_a, outsider)

        reply = await alice_a.request("direct_message", to=bob["username"], text="hi bob", uuid="dm-1")
        assert reply["status"] == "success", reply
        room_id = reply["room"]
        assert re.fullmatch(r"[0-9a-f]{32}", room_id)
        message = reply["message"]
        assert reply == {"uuid": "dm-1", "action": "direct_message", "room": room_id, "status": "success",
                         "message": message, "cursor": reply["cursor"]}
        assert isinstance(reply["cursor"], str)
        assert set(message) == MESSAGE_KEYS
        assert message["user"] == {"username": alice["username"]} and message["room"] == room_id
        assert message["text"] == "hi bob"

        def is_dm(frame_uuid):
            return lambda f: f.get("uuid") == frame_uuid and f.get("action") == "direct_message"

        for client in [alice_b, bob_a, bob_b]:
            assert await client.expect(is_dm("dm-1")) == reply
        await stranger.barrier()
        await alice_a.barrier()
        assert stranger.unread(is_dm("dm-1")) == [] and alice_a.unread(is_dm("dm-1")) == []

        # The answer goes to the same room.
        answer = await bob_b.request("direct_message", to=alice["username"], text="hi alice", uuid="dm-2")
        assert answer["status"] == "success" and answer["room"] == room_id, answer
        for client in [alice_a, alice_b, bob_a]:
            assert await client.expect(is_dm("dm-2")) == answer

        for client in [alice_a, bob_a]:
            rooms = direct_rooms((await client.ok("list_rooms"))["rooms"])
            assert len(rooms) == 1
            assert rooms[0]["id"] == room_id and rooms[0]["members"] == members_of(alice, bob)
            assert rooms[0]["last_message"] == answer["message"]
        # A direct room is a room like any other for reading.
        selected = await alice_b.ok("select_room", room=room_id)
        assert selected["room_messages"] == [message, answer["message"]]
        assert direct_rooms((await stranger.ok("list_rooms"))["rooms"]) == []
        refused = await stranger.request("select_room", room=room_id)
        assert refused["error_code"] == "invalid_room_id"

    run(scenario)


def test_direct_message_errors(e2e):
    data = e2e.fixtures(users=2)
    alice, bob = data["users"]

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, alice)
        cases = [
            ({"to": alice["username"], "text": "talking to myself"}, "invalid_user"),
            ({"to": f"nobody-{uuid.uuid4().hex[:8]}", "text": "anyone?"}, "invalid_user"),
            ({"to": bob["username"], "text": ""}, "empty_text"),
            ({"to": bob["username"], "text": " \n\t "}, "empty_text"),
            ({"to": bob["username"], "text": "x" * 4001}, "text_too_long"),
            ({"to": bob["username"], "text": 42}, "invalid_message_format"),
            ({"to": bob["id"], "text": "by id"}, "invalid_message_format"),
            ({"text": "to no one"}, "invalid_message_format"),
        ]
        for fields, code in cases:
            reply = await client.request("direct_message", **fields)
            assert reply["status"] == "error" and reply["error_code"] == code, (fields, reply)
            assert reply["error_message"]
        # None of them made a direct room.
        assert direct_rooms((await client.ok("list_rooms"))["rooms"]) == []
        other = await connect(session, e2e.gateway_b, bob)
        assert direct_rooms((await other.ok("list_rooms"))["rooms"]) == []

    run(scenario)
    assert e2e.orm(lambda: ChatRoom.objects.filter(is_direct=True, users__id__in=[alice["id"], bob["id"]]).count()) == 0
    assert e2e.orm(lambda: ChatMessage.objects.filter(user_id=alice["id"]).count()) == 0


# Pairs raced one after the other: each pair's two first messages leave together and go to a
# worker each about half of the time, where they race between the lookup and the insert of
# the room. Twenty rounds make it all but certain that some do.
PAIRS = 20


def test_first_messages_racing_make_one_direct_room_per_pair(e2e):
    data = e2e.fixtures(users=2 * PAIRS)
    pairs = [(data["users"][2 * n], data["users"][2 * n + 1]) for n in range(PAIRS)]

    async def scenario(session):
        for first, second in pairs:
            client_1 = await connect(session, e2e.gateway_a, first)
            client_2 = await connect(session, e2e.gateway_b, second)
            # The two first messages leave at the same moment, through different gateways.
            await asyncio.gather(
                client_1.send({"uuid": "race-1", "action": "direct_message", "to": second["username"],
                               "text": f"from {first['username']}"}),
                client_2.send({"uuid": "race-2", "action": "direct_message", "to": first["username"],
                               "text": f"from {second['username']}"}))
            own_1 = await client_1.expect(lambda f: f.get("uuid") == "race-1")
            own_2 = await client_2.expect(lambda f: f.get("uuid") == "race-2")
            assert own_1["status"] == own_2["status"] == "success", (own_1, own_2)
            assert own_1["room"] == own_2["room"]
            # Each also gets the other's message.
            assert await client_1.expect(lambda f: f.get("uuid") == "race-2") == own_2
            assert await client_2.expect(lambda f: f.get("uuid") == "race-1") == own_1
            for client in (client_1, client_2):
                rooms = direct_rooms((await client.ok("list_rooms"))["rooms"])
                assert len(rooms) == 1, rooms
                assert rooms[0]["id"] == own_1["room"] and rooms[0]["members"] == members_of(first, second)
            history = await client_1.ok("load_history", room=own_1["room"])
            assert sorted(m["id"] for m in history["room_messages"]) == sorted(
                [own_1["message"]["id"], own_2["message"]["id"]])
            await client_1.close()
            await client_2.close()

    run(scenario)
    for first, second in pairs:
        count = e2e.orm(lambda first=first, second=second: ChatRoom.objects.filter(
            is_direct=True, users__id=first["id"]).filter(users__id=second["id"]).count())
        assert count == 1


def test_retried_direct_message_is_stored_once(e2e):
    data = e2e.fixtures(users=2)
    alice, bob = data["users"]
    frame_uuid = f"dm-retry-{uuid.uuid4().hex}"

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, alice)
        first = await client.ok("direct_message", to=bob["username"], text="only once", uuid=frame_uuid)
        # The retry comes from a new connection through the other gateway, as after a reconnect.
        again = await connect(session, e2e.gateway_b, alice)
        second = await again.ok("direct_message", to=bob["username"], text="only once", uuid=frame_uuid)
        assert second["room"] == first["room"] and second["message"] == first["message"]
        history = await again.ok("load_history", room=first["room"])
        assert [m["id"] for m in history["room_messages"]] == [first["message"]["id"]]

    run(scenario)
    assert e2e.orm(lambda: ChatMessage.objects.filter(client_uuid=frame_uuid).count()) == 1
