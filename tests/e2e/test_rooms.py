"""Rooms end to end: list_rooms, create_room, add_members and leave_room over real gateways and workers."""

from __future__ import annotations

import re
import uuid

import pytest

from chat.models import ChatRoom, Membership
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOM_KEYS = {"id", "name", "is_direct", "members", "last_message", "unread_count"}


def members_of(*users):
    return [{"username": name} for name in sorted(user["username"] for user in users)]


def test_list_rooms_shape_and_newest_activity_first(e2e):
    data = e2e.fixtures(users=4)
    owner, viewer, third, outsider = data["users"]

    async def scenario(session):
        creator = await connect(session, e2e.gateway_a, owner)
        reader = await connect(session, e2e.gateway_b, viewer)
        stranger = await connect(session, e2e.gateway_b, outsider)

        first = (await creator.ok("create_room", name="first", members=[viewer["username"], third["username"]]))["room"]
        second = (await creator.ok("create_room", name="second", members=[viewer["username"]]))["room"]
        await stranger.ok("create_room", name="not yours", members=[])

        # Two empty rooms: the newer creation first; the stranger's room is not listed.
        rooms = (await reader.ok("list_rooms"))["rooms"]
        assert [room["id"] for room in rooms] == [second["id"], first["id"]]
        for room in rooms:
            assert set(room) == ROOM_KEYS
            assert re.fullmatch(r"[0-9a-f]{32}", room["id"])
            assert room["is_direct"] is False and room["last_message"] is None and room["unread_count"] == 0
        assert rooms[1]["name"] == "first"
        assert rooms[1]["members"] == members_of(owner, viewer, third)
        assert rooms[0]["members"] == members_of(owner, viewer)

        # A message makes the older room the newest activity.
        posted = (await creator.ok("new_message", room=first["id"], text="first news"))["message"]
        rooms = (await reader.ok("list_rooms"))["rooms"]
        assert [room["id"] for room in rooms] == [first["id"], second["id"]]
        assert rooms[0]["last_message"] == posted
        assert rooms[0]["unread_count"] == 1
        assert rooms[1]["last_message"] is None and rooms[1]["unread_count"] == 0

        # A room created after that message is newer still, although it has no message.
        third_room = (await creator.ok("create_room", name="third", members=[viewer["username"]]))["room"]
        rooms = (await reader.ok("list_rooms"))["rooms"]
        assert [room["id"] for room in rooms] == [third_room["id"], first["id"], second["id"]]

        # And a message in the oldest room brings it to the top.
        posted_2 = (await creator.ok("new_message", room=second["id"], text="second news"))["message"]
        posted_3 = (await creator.ok("new_message", room=second["id"], text="more news"))["message"]
        rooms = (await reader.ok("list_rooms"))["rooms"]
        assert [room["id"] for room in rooms] == [second["id"], third_room["id"], first["id"]]
        assert rooms[0]["last_message"] == posted_3 and posted_2["id"] < posted_3["id"]
        assert rooms[0]["unread_count"] == 2

    run(scenario)


def test_create_room_reaches_every_connection_of_every_member(e2e):
    data = e2e.fixtures(users=4)
    owner, guest_1, guest_2, outsider = data["users"]

    async def scenario(session):
        owner_a = await connect(session, e2e.gateway_a, owner)
        owner_b = await connect(session, e2e.gateway_b, owner)
        guests = [await connect(session, e2e.gateway_b, guest_1), await connect(session, e2e.gateway_a, guest_2),
                  await connect(session, e2e.gateway_b, guest_2)]
        stranger = await connect(session, e2e.gateway_a, outsider)

        reply = await owner_a.request("create_room", name="planning",
                                      members=[guest_2["username"], guest_1["username"]], uuid="create-1")
        room = reply["room"]
        assert reply == {"uuid": "create-1", "action": "create_room", "status": "success", "room": room,
                         "cursor": reply["cursor"]}
        assert isinstance(reply["cursor"], str)
        assert set(room) == ROOM_KEYS
        assert re.fullmatch(r"[0-9a-f]{32}", room["id"])
        assert room["is_direct"] is False
        assert room["name"] == "planning"
        assert room["members"] == members_of(owner, guest_1, guest_2)
        assert room["last_message"] is None and room["unread_count"] == 0

        def same(frame):
            return frame.get("uuid") == "create-1" and frame.get("action") == "create_room"

        for client in [owner_b, *guests]:
            assert await client.expect(same) == reply
        for client in [stranger, owner_a, *guests]:
            await client.barrier()
        assert stranger.unread(same) == []
        assert owner_a.unread(same) == []  # one copy for the creating connection
        assert all(client.unread(same) == [] for client in guests)

        # The room is real: every member can post in it and sees it in list_rooms.
        for client in guests:
            rooms = (await client.ok("list_rooms"))["rooms"]
            assert room["id"] in [r["id"] for r in rooms]
        assert (await guests[0].ok("new_message", room=room["id"], text="hello"))["room"] == room["id"]
        return room["id"]

    room_id = run(scenario)
    members = e2e.orm(lambda: set(Membership.objects.filter(room_id=room_id).values_list("user_id", flat=True)))
    assert members == {owner["id"], guest_1["id"], guest_2["id"]}


def test_create_room_errors(e2e):
    data = e2e.fixtures(users=2)
    owner, other = data["users"]

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, owner)
        cases = [
            ({"name": "", "members": [other["username"]]}, "invalid_message_format"),
            ({"name": "x" * 201, "members": [other["username"]]}, "invalid_message_format"),
            ({"name": 42, "members": [other["username"]]}, "invalid_message_format"),
            ({"name": None, "members": [other["username"]]}, "invalid_message_format"),
            ({"members": [other["username"]]}, "invalid_message_format"),
            ({"name": "ok", "members": other["username"]}, "invalid_message_format"),
            ({"name": "ok", "members": [other["id"]]}, "invalid_message_format"),
            ({"name": "ok", "members": [other["username"], None]}, "invalid_message_format"),
            ({"name": "ok", "members": {"username": other["username"]}}, "invalid_message_format"),
            ({"name": "ok", "members": [f"nobody-{uuid.uuid4().hex[:8]}"]}, "invalid_user"),
            ({"name": "ok", "members": [other["username"], f"nobody-{uuid.uuid4().hex[:8]}"]}, "invalid_user"),
        ]
        for fields, code in cases:
            reply = await client.request("create_room", **fields)
            assert reply["status"] == "error" and reply["error_code"] == code, (fields, reply)
            assert reply["error_message"]
        # None of those made a room; the longest allowed name does.
        assert (await client.ok("list_rooms"))["rooms"] == []
        longest = await client.ok("create_room", name="y" * 200, members=[other["username"]])
        assert longest["room"]["name"] == "y" * 200
        rooms = (await client.ok("list_rooms"))["rooms"]
        assert [room["id"] for room in rooms] == [longest["room"]["id"]]

    run(scenario)
    assert e2e.orm(lambda: ChatRoom.objects.filter(users__id=owner["id"]).count()) == 1


def test_add_members_reaches_old_and_new_members_on_every_gateway(e2e):
    data = e2e.fixtures(users=5)
    owner, old, new_1, new_2, outsider = data["users"]

    async def scenario(session):
        owner_a = await connect(session, e2e.gateway_a, owner)
        old_b = await connect(session, e2e.gateway_b, old)
        new_1_a = await connect(session, e2e.gateway_a, new_1)
        new_1_b = await connect(session, e2e.gateway_b, new_1)
        new_2_b = await connect(session, e2e.gateway_b, new_2)
        stranger = await connect(session, e2e.gateway_a, outsider)

        room = (await owner_a.ok("create_room", name="growing", members=[old["username"]]))["room"]
        await old_b.expect(lambda f: f.get("action") == "create_room" and f["room"]["id"] == room["id"])
        history = [(await owner_a.ok("new_message", room=room["id"], text=f"before {n}"))["message"] for n in range(3)]

        reply = await owner_a.request("add_members", room=room["id"], uuid="add-1",
                                      members=[new_1["username"], new_2["username"], old["username"]])
        assert reply["status"] == "success", reply
        added = reply["room"]
        # `room` is the room object here, not the id echoed.
        assert reply == {"uuid": "add-1", "action": "add_members", "status": "success", "room": added,
                         "cursor": reply["cursor"]}
        assert isinstance(reply["cursor"], str)
        assert set(added) == ROOM_KEYS
        assert added["id"] == room["id"] and added["name"] == "growing" and added["is_direct"] is False
        assert added["members"] == members_of(owner, old, new_1, new_2)
        assert added["last_message"] == history[-1]
        assert added["unread_count"] == 0  # as the newcomers see it

        def same(frame):
            return frame.get("uuid") == "add-1" and frame.get("action") == "add_members"

        for client in [old_b, new_1_a, new_1_b, new_2_b]:
            assert await client.expect(same) == reply
        for client in [stranger, owner_a]:
            await client.barrier()
        assert stranger.unread(same) == [] and owner_a.unread(same) == []

        # The newcomers have read the history up to their joining; the old member has not.
        for client in [new_1_a, new_2_b]:
            rooms = {r["id"]: r for r in (await client.ok("list_rooms"))["rooms"]}
            assert rooms[room["id"]]["unread_count"] == 0
            assert rooms[room["id"]]["members"] == added["members"]
        rooms = {r["id"]: r for r in (await old_b.ok("list_rooms"))["rooms"]}
        assert rooms[room["id"]]["unread_count"] == 3
        # The history is there to read, and what comes next reaches the newcomers live and unread.
        selected = await new_2_b.ok("select_room", room=room["id"])
        assert selected["room_messages"] == history
        later = (await owner_a.ok("new_message", room=room["id"], text="welcome"))["message"]
        for client in [new_1_a, new_1_b, new_2_b, old_b]:
            got = await client.expect(lambda f: f.get("action") == "new_message" and f["message"]["id"] == later["id"])
            assert got["message"] == later
        rooms = {r["id"]: r for r in (await new_1_b.ok("list_rooms"))["rooms"]}
        assert rooms[room["id"]]["unread_count"] == 1

        # Naming only members already there is not an error, and changes nothing.
        again = await new_1_a.ok("add_members", room=room["id"], members=[owner["username"], new_2["username"]])
        assert again["room"]["members"] == added["members"]

    run(scenario)


def test_add_members_errors(e2e):
    data = e2e.fixtures(users=4)
    owner, friend, newcomer, outsider = data["users"]

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, owner)
        stranger = await connect(session, e2e.gateway_b, outsider)
        room = (await client.ok("create_room", name="closed", members=[friend["username"]]))["room"]
        direct = await client.ok("direct_message", to=friend["username"], text="just us")

        refused = await client.request("add_members", room=direct["room"], members=[newcomer["username"]])
        assert refused["status"] == "error" and refused["error_code"] == "invalid_room_id", refused
        assert refused["room"] == direct["room"]

        not_member = await stranger.request("add_members", room=room["id"], members=[outsider["username"]])
        missing = await stranger.request("add_members", room=uuid.uuid4().hex, members=[outsider["username"]])
        assert not_member["error_code"] == missing["error_code"] == "invalid_room_id", (not_member, missing)
        assert not_member["error_message"] == missing["error_message"]
        assert not_member["room"] == room["id"]

        cases = [
            ({"members": [f"nobody-{uuid.uuid4().hex[:8]}"]}, "invalid_user"),
            ({"members": newcomer["username"]}, "invalid_message_format"),
            ({"members": [newcomer["id"]]}, "invalid_message_format"),
            ({"members": None}, "invalid_message_format"),
            ({}, "invalid_message_format"),
        ]
        for fields, code in cases:
            reply = await client.request("add_members", room=room["id"], **fields)
            assert reply["status"] == "error" and reply["error_code"] == code, (fields, reply)
            assert reply["room"] == room["id"]

        rooms = {r["id"]: r for r in (await client.ok("list_rooms"))["rooms"]}
        assert rooms[room["id"]]["members"] == members_of(owner, friend)
        assert rooms[direct["room"]]["members"] == members_of(owner, friend)
        assert room["id"] not in [r["id"] for r in (await stranger.ok("list_rooms"))["rooms"]]

    run(scenario)


def test_leave_room(e2e):
    data = e2e.fixtures(users=4)
    owner, stayer, leaver, outsider = data["users"]

    async def scenario(session):
        owner_a = await connect(session, e2e.gateway_a, owner)
        stayer_b = await connect(session, e2e.gateway_b, stayer)
        leaver_a = await connect(session, e2e.gateway_a, leaver)
        leaver_b = await connect(session, e2e.gateway_b, leaver)
        stranger = await connect(session, e2e.gateway_a, outsider)
        room = (await owner_a.ok("create_room", name="leaving",
                                 members=[stayer["username"], leaver["username"]]))["room"]

        outsider_try = await stranger.request("leave_room", room=room["id"])
        assert outsider_try["status"] == "error" and outsider_try["error_code"] == "invalid_room_id"

        # The room as sent (here the hyphenated form) comes back.
        as_sent = str(uuid.UUID(room["id"]))
        reply = await leaver_a.request("leave_room", room=as_sent, uuid="leave-1")
        assert reply == {"uuid": "leave-1", "action": "leave_room", "room": as_sent, "status": "success",
                         "user": {"username": leaver["username"]}, "cursor": reply["cursor"]}
        assert isinstance(reply["cursor"], str)

        def same(frame):
            return frame.get("uuid") == "leave-1" and frame.get("action") == "leave_room"

        for client in [owner_a, stayer_b, leaver_b]:
            assert await client.expect(same) == reply
        await stranger.barrier()
        assert stranger.unread(same) == []

        # Afterwards the room is gone for the leaver, and its messages no longer reach them.
        posted = (await owner_a.ok("new_message", room=room["id"], text="after you left"))["message"]

        def the_message(frame):
            return frame.get("action") == "new_message" and frame.get("message", {}).get("id") == posted["id"]

        await stayer_b.expect(the_message)
        for client in [leaver_a, leaver_b]:
            await client.barrier()
            assert client.unread(the_message) == []
        for action, fields in [("select_room", {}), ("new_message", {"text": "let me back"}),
                               ("leave_room", {}), ("load_history", {}), ("typing", {}), ("who_is_online", {}),
                               ("mark_read", {"message": posted["id"]})]:
            refused = await leaver_a.request(action, room=room["id"], **fields)
            assert refused["status"] == "error" and refused["error_code"] == "invalid_room_id", (action, refused)
        assert room["id"] not in [r["id"] for r in (await leaver_b.ok("list_rooms"))["rooms"]]
        rooms = {r["id"]: r for r in (await owner_a.ok("list_rooms"))["rooms"]}
        assert rooms[room["id"]]["members"] == members_of(owner, stayer)
        sync = await leaver_a.ok("sync", after=posted["id"] - 1)
        assert posted["id"] not in [m["id"] for m in sync["messages"]]

    run(scenario)
