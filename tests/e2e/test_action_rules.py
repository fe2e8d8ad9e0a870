"""Rules every action keeps, end to end: authentication first, and one way of refusing a room id."""

from __future__ import annotations

import uuid

import pytest

from chat.models import ChatMessage, Membership
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_every_action_but_authenticate_and_ping_needs_authentication(e2e):
    data = e2e.fixtures(users=2, rooms=1, room_size=2)
    room = data["rooms"][0]["id"]
    other = data["users"][1]
    actions = [
        ("select_room", {"room": room}),
        ("new_message", {"room": room, "text": "hi"}),
        ("list_rooms", {}),
        ("create_room", {"name": "sneaky", "members": [other["username"]]}),
        ("add_members", {"room": room, "members": [other["username"]]}),
        ("leave_room", {"room": room}),
        ("direct_message", {"to": other["username"], "text": "hi"}),
        ("load_history", {"room": room}),
        ("mark_read", {"room": room, "message": 1}),
        ("typing", {"room": room}),
        ("who_is_online", {"room": room}),
        ("sync", {"after": 0}),
    ]

    async def scenario(session):
        client = await connect(session, e2e.gateway_b)
        for action, fields in actions:
            reply = await client.request(action, **fields)
            assert reply["status"] == "error" and reply["error_code"] == "authentication_required", (action, reply)
            assert reply["action"] == action and reply["error_message"]
        assert (await client.request("ping"))["status"] == "success"
        # Still usable: it may authenticate now.
        await client.authenticate(data["users"][0])
        assert (await client.request("list_rooms"))["status"] == "success"

    run(scenario)
    assert e2e.orm(lambda: Membership.objects.filter(room_id=room).count()) == 2
    assert e2e.orm(lambda: ChatMessage.objects.filter(room_id=room).count()) == 0


# Every action that names a room, with the other fields it needs to be otherwise valid.
ROOM_ACTIONS = [
    ("select_room", {}),
    ("new_message", {"text": "hi"}),
    ("add_members", {"members": []}),
    ("leave_room", {}),
    ("load_history", {}),
    ("mark_read", {"message": 1}),
    ("typing", {}),
    ("who_is_online", {}),
]


@pytest.mark.parametrize("action, fields", ROOM_ACTIONS, ids=[action for action, _ in ROOM_ACTIONS])
def test_bad_room_ids_are_refused_alike(e2e, action, fields):
    data = e2e.fixtures(users=2, rooms=1, room_size=1)
    room = data["rooms"][0]
    member = next(u for u in data["users"] if u["id"] in room["members"])
    outsider = next(u for u in data["users"] if u["id"] not in room["members"])
    if action == "add_members":
        fields = {"members": [outsider["username"]]}

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, outsider)
        for bad in [42, None, ["x"], {"id": room["id"]}]:
            reply = await client.request(action, room=bad, **fields)
            assert reply["status"] == "error" and reply["error_code"] == "invalid_message_format", (bad, reply)
        unknown = await client.request(action, room=uuid.uuid4().hex, **fields)
        assert unknown["status"] == "error" and unknown["error_code"] == "invalid_room_id", unknown
        for bad in ["", "abc", "g" * 32, room["id"][:31], room["id"] + "0", "-" * 36]:
            reply = await client.request(action, room=bad, **fields)
            assert reply["status"] == "error" and reply["error_code"] == "invalid_room_id", (bad, reply)
            assert reply["room"] == bad
        # A room that exists but is not theirs: the very same answer as a room that does not exist.
        not_member = await client.request(action, room=room["id"], **fields)
        assert not_member["status"] == "error", not_member
        assert not_member == {"uuid": not_member["uuid"], "action": action, "room": room["id"], "status": "error",
                              "error_code": "invalid_room_id", "error_message": unknown["error_message"]}
        hyphenated = await client.request(action, room=str(uuid.UUID(room["id"])), **fields)
        assert hyphenated["error_code"] == "invalid_room_id" and hyphenated["room"] == str(uuid.UUID(room["id"]))

        # The member's own request is accepted (the room ids above were refused for what they were).
        own = await connect(session, e2e.gateway_b, member)
        member_fields = {"members": [member["username"]]} if action == "add_members" else fields
        if action == "mark_read":
            member_fields = {"message": 0}
        if action == "typing":
            await own.send({"uuid": "own-typing", "action": action, "room": room["id"]})
            await own.barrier()
            assert own.unread(lambda f: f.get("uuid") == "own-typing") == []  # success: nothing to the typist
        else:
            reply = await own.request(action, room=room["id"], **member_fields)
            assert reply["status"] == "success", reply

    run(scenario)
    # Nothing the outsider sent changed the room.
    assert e2e.orm(lambda: set(Membership.objects.filter(room_id=room["id"]).values_list("user_id", flat=True))) == (
        set() if action == "leave_room" else {member["id"]})
    assert e2e.orm(lambda: ChatMessage.objects.filter(room_id=room["id"]).count()) == (
        1 if action == "new_message" else 0)
