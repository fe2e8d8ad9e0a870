"""Reading end to end: load_history pages, mark_read and unread counts, sync after a reconnect."""

from __future__ import annotations

import pytest

from chat.models import ChatMessage, ChatRoom
from tests.e2e.client import MESSAGE_KEYS
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BAD_TYPES = [0, -1, True, False, "5", 2.5, [5], {"n": 5}]


def add_messages(e2e, room_id, user_id, count, prefix="message"):
    def work():
        room = ChatRoom.objects.get(pk=room_id)
        ChatMessage.objects.bulk_create([ChatMessage(user_id=user_id, room=room, text=f"{prefix} {n}")
                                         for n in range(count)])
        return list(ChatMessage.objects.filter(room=room).order_by("id").values_list("id", flat=True))

    return e2e.orm(work)


def test_load_history_pages_back_oldest_first(e2e):
    data = e2e.fixtures(users=1, rooms=1, room_size=1)
    room = data["rooms"][0]
    user = data["users"][0]
    ids = add_messages(e2e, room["id"], user["id"], 45)

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, user)

        newest = await client.request("load_history", room=room["id"], uuid="h-1")
        assert set(newest) == {"uuid", "action", "room", "status", "room_messages", "has_more"}
        assert newest["uuid"] == "h-1" and newest["action"] == "load_history" and newest["room"] == room["id"]
        assert newest["status"] == "success" and newest["has_more"] is True
        assert [m["text"] for m in newest["room_messages"]] == [f"message {n}" for n in range(25, 45)]
        assert [m["id"] for m in newest["room_messages"]] == ids[25:]
        first = newest["room_messages"][0]
        assert set(first) == MESSAGE_KEYS
        assert first["user"] == {"username": user["username"]} and first["room"] == room["id"]

        older = await client.ok("load_history", room=room["id"], before=ids[25])
        assert [m["id"] for m in older["room_messages"]] == ids[5:25] and older["has_more"] is True
        oldest = await client.ok("load_history", room=room["id"], before=ids[5])
        assert [m["id"] for m in oldest["room_messages"]] == ids[:5] and oldest["has_more"] is False
        nothing = await client.ok("load_history", room=room["id"], before=ids[0])
        assert nothing["room_messages"] == [] and nothing["has_more"] is False

        small = await client.ok("load_history", room=room["id"], before=ids[10], limit=3)
        assert [m["id"] for m in small["room_messages"]] == ids[7:10] and small["has_more"] is True
        one = await client.ok("load_history", room=room["id"], limit=1)
        assert [m["id"] for m in one["room_messages"]] == ids[-1:] and one["has_more"] is True
        # has_more is exact at the boundary.
        exact = await client.ok("load_history", room=room["id"], limit=45)
        assert [m["id"] for m in exact["room_messages"]] == ids and exact["has_more"] is False
        short = await client.ok("load_history", room=room["id"], limit=44)
        assert [m["id"] for m in short["room_messages"]] == ids[1:] and short["has_more"] is True
        everything = await client.ok("load_history", room=room["id"], limit=100)
        assert [m["id"] for m in everything["room_messages"]] == ids and everything["has_more"] is False
        # A `before` past the newest message is the newest page.
        past = await client.ok("load_history", room=room["id"], before=ids[-1] + 1000, limit=2)
        assert [m["id"] for m in past["room_messages"]] == ids[-2:]

    run(scenario)


def test_load_history_refuses_bad_limits_and_cursors(e2e):
    data = e2e.fixtures(users=1, rooms=1, room_size=1)
    room = data["rooms"][0]
    user = data["users"][0]
    add_messages(e2e, room["id"], user["id"], 3)

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, user)
        for limit in [*BAD_TYPES, 101]:
            reply = await client.request("load_history", room=room["id"], limit=limit)
            assert reply["status"] == "error" and reply["error_code"] == "invalid_message_format", (limit, reply)
            assert reply["room"] == room["id"]
        for before in [-1, True, "5", 2.5, [1]]:
            reply = await client.request("load_history", room=room["id"], before=before)
            assert reply["status"] == "error" and reply["error_code"] == "invalid_message_format", (before, reply)
        for limit in (1, 100):
            assert (await client.request("load_history", room=room["id"], limit=limit))["status"] == "success"

    run(scenario)


def test_mark_read_moves_forward_only_and_is_clamped(e2e):
    room, writer, reader, outsider = e2e.room_of_two()

    async def scenario(session):
        writer_a = await connect(session, e2e.gateway_a, writer)
        reader_a = await connect(session, e2e.gateway_a, reader)
        reader_b = await connect(session, e2e.gateway_b, reader)
        stranger = await connect(session, e2e.gateway_b, outsider)
        posted = [(await writer_a.ok("new_message", room=room["id"], text=f"n{n}"))["message"]["id"]
                  for n in range(5)]

        async def unread():
            rooms = {r["id"]: r for r in (await reader_b.ok("list_rooms"))["rooms"]}
            return rooms[room["id"]]["unread_count"]

        assert await unread() == 5

        reply = await reader_a.request("mark_read", room=room["id"], message=posted[2], uuid="read-1")
        assert reply == {"uuid": "read-1", "action": "mark_read", "room": room["id"], "status": "success",
                         "message": posted[2], "last_read_id": posted[2], "unread_count": 2, "cursor": reply["cursor"]}
        assert isinstance(reply["cursor"], str)

        def same(frame):
            return frame.get("uuid") == "read-1" and frame.get("action") == "mark_read"

        # Every connection of the reader, and no one else's.
        assert await reader_b.expect(same) == reply
        for client in (writer_a, reader_a):
            await client.barrier()
        assert writer_a.unread(same) == [] and reader_a.unread(same) == []
        assert await unread() == 2

        # Backwards: the mark stays where it is.
        back = await reader_b.ok("mark_read", room=room["id"], message=posted[0])
        assert back["message"] == posted[0] and back["last_read_id"] == posted[2] and back["unread_count"] == 2
        assert await unread() == 2
        # Past the newest message: clamped to it, so what comes later is unread.
        beyond = posted[-1] + 1000
        ahead = await reader_b.ok("mark_read", room=room["id"], message=beyond)
        assert ahead["message"] == beyond and ahead["last_read_id"] == posted[-1] and ahead["unread_count"] == 0
        assert await unread() == 0
        later = (await writer_a.ok("new_message", room=room["id"], text="later"))["message"]["id"]
        assert later < beyond
        assert await unread() == 1
        again = await reader_a.ok("mark_read", room=room["id"], message=later)
        assert again["last_read_id"] == later and again["unread_count"] == 0
        assert await unread() == 0

        for message in [-1, True, "3", 2.5, None, [posted[0]]]:
            refused = await reader_a.request("mark_read", room=room["id"], message=message)
            assert refused["status"] == "error" and refused["error_code"] == "invalid_message_format", (message,
                                                                                                       refused)
        missing = await reader_a.request("mark_read", room=room["id"])
        assert missing["error_code"] == "invalid_message_format", missing
        not_member = await stranger.request("mark_read", room=room["id"], message=later)
        assert not_member["error_code"] == "invalid_room_id", not_member
        assert await unread() == 0

    run(scenario)


def test_sync_after_a_reconnect_misses_nothing(e2e):
    data = e2e.fixtures(users=3)
    away, sender, third = data["users"]

    async def scenario(session):
        writer = await connect(session, e2e.gateway_a, sender)
        other = await connect(session, e2e.gateway_b, third)
        rooms = [(await writer.ok("create_room", name=f"r{n}", members=[away["username"]]))["room"]["id"]
                 for n in range(2)]
        rooms.append((await writer.ok("create_room", name="r2", members=[away["username"], third["username"]]))
                     ["room"]["id"])
        elsewhere = (await writer.ok("create_room", name="not theirs", members=[third["username"]]))["room"]["id"]
        seen = [(await writer.ok("new_message", room=rooms[0], text="seen"))["message"]["id"]]
        seen.append((await other.ok("new_message", room=rooms[2], text="seen too"))["message"]["id"])

        # The client catches up from scratch (no `after`), notes the newest id, and goes away.
        client = await connect(session, e2e.gateway_a, away)
        start = await client.request("sync", uuid="sync-0")
        assert set(start) == {"uuid", "action", "status", "messages", "has_more"}
        assert start["status"] == "success" and start["has_more"] is False
        assert [m["id"] for m in start["messages"]] == seen
        newest = start["messages"][-1]["id"]
        await client.close()

        missed = []
        for n in range(8):
            missed.append((await writer.ok("new_message", room=rooms[n % 3], text=f"missed {n}"))["message"])
            if n % 3 == 0:
                missed.append((await other.ok("new_message", room=rooms[2], text=f"other {n}"))["message"])
            await writer.ok("new_message", room=elsewhere, text=f"not for them {n}")
        assert len(missed) == 11

        # Back, through the other gateway: page through sync with a small limit.
        client = await connect(session, e2e.gateway_b, away)
        found, pages, after = [], [], newest
        while True:
            page = await client.ok("sync", after=after, limit=3)
            pages.append((len(page["messages"]), page["has_more"]))
            found.extend(page["messages"])
            if not page["has_more"]:
                break
            assert len(pages) < 10, pages
            after = page["messages"][-1]["id"]
        assert pages == [(3, True), (3, True), (3, True), (2, False)]
        assert found == missed  # every one, once, in id order, and nothing from a room not theirs
        assert [m["id"] for m in found] == sorted(m["id"] for m in found)
        assert {m["room"] for m in found} == set(rooms)
        # Nothing more after the newest.
        tail = await client.ok("sync", after=found[-1]["id"])
        assert tail["messages"] == [] and tail["has_more"] is False

    run(scenario)


def test_sync_refuses_bad_limits_and_cursors(e2e):
    data = e2e.fixtures(users=1, rooms=1, room_size=1)
    user = data["users"][0]
    ids = add_messages(e2e, data["rooms"][0]["id"], user["id"], 3)

    async def scenario(session):
        client = await connect(session, e2e.gateway_a, user)
        for limit in [*BAD_TYPES, 501]:
            reply = await client.request("sync", after=0, limit=limit)
            assert reply["status"] == "error" and reply["error_code"] == "invalid_message_format", (limit, reply)
        for after in [-1, True, "5", 2.5, [1]]:
            reply = await client.request("sync", after=after)
            assert reply["status"] == "error" and reply["error_code"] == "invalid_message_format", (after, reply)
        for limit in (1, 500):
            reply = await client.ok("sync", after=ids[0], limit=limit)
            assert [m["id"] for m in reply["messages"]] == ids[1:1 + limit]
            assert reply["has_more"] is (limit == 1)

    run(scenario)
