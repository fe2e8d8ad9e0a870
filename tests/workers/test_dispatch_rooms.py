"""`workers.dispatch` for the actions beyond the pipeline: rooms, direct messages, history, reads,
typing, presence and sync, each as the bus envelope a worker publishes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chat.models import ChatMessage, ChatRoom, Membership
from workers import dispatch
from workers.dispatch import Outgoing

from .test_dispatch import REPLY_TO, RESPONSE_TOPIC, assert_error, bus_request, send

ROOM_KEYS = {"id", "name", "is_direct", "members", "last_message", "unread_count"}


def assert_broadcast(outgoing: Outgoing, request: dict[str, Any], send_to: list[int]) -> dict[str, Any]:
    """A success for several users: on the response topic, to exactly `send_to`, no session change."""
    assert outgoing.topic == RESPONSE_TOPIC
    envelope = outgoing.envelope
    assert envelope["type"] == "success_response"
    assert envelope["request_id"] == request["request_id"]
    assert sorted(envelope["send_to"]) == sorted(send_to)
    assert envelope["session_data"] is None
    response = envelope["response"]
    assert (response["uuid"], response["action"], response["status"]) == (request["uuid"], request["action"],
                                                                         "success")
    return response


def assert_private(outgoing: Outgoing, request: dict[str, Any]) -> dict[str, Any]:
    """A success for the requester alone, on its gateway's reply topic."""
    assert outgoing.topic == REPLY_TO
    envelope = outgoing.envelope
    assert (envelope["type"], envelope["send_to"], envelope["session_data"]) == ("success_response", None, None)
    response = envelope["response"]
    assert (response["uuid"], response["action"], response["status"]) == (request["uuid"], request["action"],
                                                                         "success")
    return response


def post(user, room, text: str) -> ChatMessage:
    return ChatMessage.objects.create(user=user, room=room, text=text)


@pytest.mark.action("list_rooms")
class TestListRooms:
    def test_rooms_newest_activity_first_with_previews_and_unread(self, alice, bob, carol, make_room):
        quiet = make_room(alice, bob, name="quiet")
        busy = make_room(alice, carol, name="busy")
        post(bob, quiet, "old")
        post(carol, busy, "one")
        newest = post(carol, busy, "two")
        empty = make_room(alice, name="empty")  # created last: its creation is its activity
        request = bus_request("list_rooms", user=alice)
        rooms = assert_private(send(request), request)["rooms"]
        assert [r["id"] for r in rooms] == [empty.pk.hex, busy.pk.hex, quiet.pk.hex]
        assert all(set(r) == ROOM_KEYS for r in rooms)
        by_name = {r["name"]: r for r in rooms}
        assert by_name["busy"]["members"] == [{"username": "alice"}, {"username": "carol"}]
        assert by_name["busy"]["last_message"]["id"] == newest.pk
        assert by_name["busy"]["last_message"]["text"] == "two"
        assert by_name["busy"]["unread_count"] == 2
        assert by_name["quiet"]["unread_count"] == 1
        assert by_name["empty"] == {"id": empty.pk.hex, "name": "empty", "is_direct": False,
                                    "members": [{"username": "alice"}], "last_message": None, "unread_count": 0}

    def test_only_the_users_rooms(self, alice, carol, room):
        request = bus_request("list_rooms", user=carol)
        assert assert_private(send(request), request)["rooms"] == []


@pytest.mark.action("create_room")
class TestCreateRoom:
    def test_creator_and_members_are_members_and_all_hear_of_it(self, alice, bob, carol):
        request = bus_request("create_room", user=alice, name="  Plans  ", members=["bob", "carol", "bob"])
        response = assert_broadcast(send(request), request, [alice.pk, bob.pk, carol.pk])
        room = response["room"]
        assert set(room) == ROOM_KEYS
        assert (room["name"], room["is_direct"], room["last_message"], room["unread_count"]) == (
            "Plans", False, None, 0)
        assert room["members"] == [{"username": "alice"}, {"username": "bob"}, {"username": "carol"}]
        stored = ChatRoom.objects.get(pk=room["id"])
        assert sorted(stored.users.values_list("username", flat=True)) == ["alice", "bob", "carol"]

    def test_naming_oneself_and_no_one_else(self, alice):
        request = bus_request("create_room", user=alice, name="solo", members=["alice"])
        assert assert_broadcast(send(request), request, [alice.pk])["room"]["members"] == [{"username": "alice"}]

    def test_unknown_member_creates_nothing(self, alice, bob):
        request = bus_request("create_room", user=alice, name="x", members=["bob", "nobody"])
        assert_error(send(request), request, "invalid_user")
        assert not ChatRoom.objects.exists()

    @pytest.mark.parametrize("fields", [
        {"name": "", "members": []}, {"name": "   ", "members": []}, {"name": 5, "members": []},
        {"members": []}, {"name": "x" * 201, "members": []}, {"name": "x", "members": "bob"},
        {"name": "x", "members": [1]}, {"name": "x", "members": [""]}, {"name": "x", "members": ["u"] * 501},
    ])
    def test_malformed(self, alice, fields):
        request = bus_request("create_room", user=alice, **fields)
        assert_error(send(request), request, "invalid_message_format")
        assert not ChatRoom.objects.exists()

    def test_members_may_be_omitted(self, alice):
        request = bus_request("create_room", user=alice, name="mine")
        assert assert_broadcast(send(request), request, [alice.pk])["room"]["name"] == "mine"


@pytest.mark.action("add_members")
class TestAddMembers:
    def test_everyone_old_and_new_hears_and_newcomers_have_nothing_unread(self, alice, bob, carol, room):
        post(bob, room, "before carol")
        request = bus_request("add_members", user=alice, room=room.pk.hex, members=["carol", "bob"])
        response = assert_broadcast(send(request), request, [alice.pk, bob.pk, carol.pk])
        assert response["room"]["id"] == room.pk.hex
        assert response["room"]["members"] == [{"username": u} for u in ("alice", "bob", "carol")]
        assert response["room"]["unread_count"] == 0
        assert response["room"]["last_message"]["text"] == "before carol"
        listing = send(bus_request("list_rooms", user=carol)).envelope["response"]["rooms"]
        assert [(r["id"], r["unread_count"]) for r in listing] == [(room.pk.hex, 0)]

    def test_non_member_cannot_add(self, carol, room):
        request = bus_request("add_members", user=carol, room=room.pk.hex, members=["carol"])
        assert_error(send(request), request, "invalid_room_id")
        assert not room.users.filter(pk=carol.pk).exists()

    def test_direct_room_takes_no_one(self, alice, bob, carol):
        dm = send(bus_request("direct_message", user=alice, to="bob", text="hi")).envelope["response"]
        request = bus_request("add_members", user=alice, room=dm["room"], members=["carol"])
        assert_error(send(request), request, "invalid_room_id")

    def test_unknown_user(self, alice, room):
        request = bus_request("add_members", user=alice, room=room.pk.hex, members=["ghost"])
        assert_error(send(request), request, "invalid_user")

    def test_members_required(self, alice, room):
        request = bus_request("add_members", user=alice, room=room.pk.hex)
        assert_error(send(request), request, "invalid_message_format")


@pytest.mark.action("leave_room")
class TestLeaveRoom:
    def test_remaining_members_and_the_leaver_hear_of_it(self, alice, bob, carol, make_room):
        group = make_room(alice, bob, carol)
        request = bus_request("leave_room", user=bob, room=group.pk.hex)
        response = assert_broadcast(send(request), request, [alice.pk, bob.pk, carol.pk])
        assert (response["room"], response["user"]) == (group.pk.hex, {"username": "bob"})
        assert sorted(group.users.values_list("username", flat=True)) == ["alice", "carol"]
        again = bus_request("leave_room", user=bob, room=group.pk.hex)
        assert_error(send(again), again, "invalid_room_id")
        selected = bus_request("select_room", user=bob, room=group.pk.hex)
        assert_error(send(selected), selected, "invalid_room_id")

    def test_messages_stay_when_the_last_member_leaves(self, alice, make_room):
        solo = make_room(alice)
        post(alice, solo, "kept")
        send(bus_request("leave_room", user=alice, room=solo.pk.hex))
        assert ChatMessage.objects.filter(room=solo).count() == 1


@pytest.mark.action("direct_message")
class TestDirectMessage:
    def test_both_users_get_it_in_their_one_direct_room(self, alice, bob):
        request = bus_request("direct_message", user=alice, to="bob", text="psst")
        response = assert_broadcast(send(request), request, [alice.pk, bob.pk])
        room = ChatRoom.objects.get(is_direct=True)
        assert response["room"] == room.pk.hex
        assert response["message"]["room"] == room.pk.hex
        assert (response["message"]["text"], response["message"]["user"]) == ("psst", {"username": "alice"})
        back = bus_request("direct_message", user=bob, to="alice", text="yes?")
        assert assert_broadcast(send(back), back, [alice.pk, bob.pk])["room"] == room.pk.hex
        assert ChatRoom.objects.filter(is_direct=True).count() == 1
        assert sorted(room.users.values_list("username", flat=True)) == ["alice", "bob"]

    def test_retry_is_stored_once(self, alice, bob):
        request = bus_request("direct_message", user=alice, to="bob", text="once")
        first = send(request).envelope["response"]["message"]
        second = send(request).envelope["response"]["message"]
        assert first == second
        assert ChatMessage.objects.count() == 1

    def test_to_oneself(self, alice):
        request = bus_request("direct_message", user=alice, to="alice", text="me")
        assert_error(send(request), request, "invalid_user")

    @pytest.mark.parametrize("to", ["ghost", "x" * 151])
    def test_unknown_user(self, alice, to):
        request = bus_request("direct_message", user=alice, to=to, text="hello?")
        assert_error(send(request), request, "invalid_user")

    def test_inactive_user_is_unknown(self, alice, make_user):
        make_user("gone", is_active=False)
        request = bus_request("direct_message", user=alice, to="gone", text="hello?")
        assert_error(send(request), request, "invalid_user")

    @pytest.mark.parametrize("to", [None, 3, "", ["bob"]])
    def test_malformed_to(self, alice, bob, to):
        request = bus_request("direct_message", user=alice, to=to, text="hi")
        assert_error(send(request), request, "invalid_message_format")

    def test_empty_text_makes_no_room(self, alice, bob):
        request = bus_request("direct_message", user=alice, to="bob", text="  ")
        assert_error(send(request), request, "empty_text")
        assert not ChatRoom.objects.exists()

    def test_text_too_long(self, alice, bob, settings):
        settings.CHAT = {**settings.CHAT, "MAX_MESSAGE_LENGTH": 5}
        request = bus_request("direct_message", user=alice, to="bob", text="toolong")
        assert_error(send(request), request, "text_too_long")

    def test_a_leaver_comes_back_with_the_next_message(self, alice, bob):
        room_id = send(bus_request("direct_message", user=alice, to="bob", text="1")).envelope["response"]["room"]
        send(bus_request("leave_room", user=bob, room=room_id))
        request = bus_request("direct_message", user=alice, to="bob", text="2")
        assert assert_broadcast(send(request), request, [alice.pk, bob.pk])["room"] == room_id


@pytest.mark.action("load_history")
class TestLoadHistory:
    @pytest.fixture
    def messages(self, alice, room) -> list[ChatMessage]:
        return [post(alice, room, f"m{n}") for n in range(30)]

    def test_before_and_limit(self, alice, room, messages):
        request = bus_request("load_history", user=alice, room=room.pk.hex, before=messages[10].pk, limit=5)
        response = assert_private(send(request), request)
        assert [m["text"] for m in response["room_messages"]] == ["m5", "m6", "m7", "m8", "m9"]
        assert (response["room"], response["has_more"]) == (room.pk.hex, True)

    def test_last_page_has_no_more(self, alice, room, messages):
        request = bus_request("load_history", user=alice, room=room.pk.hex, before=messages[3].pk, limit=3)
        response = send(request).envelope["response"]
        assert ([m["text"] for m in response["room_messages"]], response["has_more"]) == (["m0", "m1", "m2"], False)

    def test_defaults_to_20_from_the_newest(self, alice, room, messages):
        response = send(bus_request("load_history", user=alice, room=room.pk.hex)).envelope["response"]
        assert [m["text"] for m in response["room_messages"]] == [f"m{n}" for n in range(10, 30)]
        assert response["has_more"] is True

    @pytest.mark.parametrize("fields", [{"limit": 0}, {"limit": 101}, {"limit": "5"}, {"limit": True},
                                        {"limit": 2.5}, {"before": -1}, {"before": "10"}, {"before": False}])
    def test_out_of_range_or_wrong_type(self, alice, room, fields):
        request = bus_request("load_history", user=alice, room=room.pk.hex, **fields)
        assert_error(send(request), request, "invalid_message_format")

    def test_limit_100_is_allowed(self, alice, room, messages):
        response = send(bus_request("load_history", user=alice, room=room.pk.hex, limit=100)).envelope["response"]
        assert len(response["room_messages"]) == 30 and response["has_more"] is False

    def test_non_member(self, carol, room, messages):
        request = bus_request("load_history", user=carol, room=room.pk.hex)
        assert_error(send(request), request, "invalid_room_id")


@pytest.mark.action("mark_read")
class TestMarkRead:
    def test_every_connection_of_the_reader_hears_and_unread_counts_follow(self, alice, bob, room):
        first, second, third = (post(bob, room, t) for t in ("a", "b", "c"))
        request = bus_request("mark_read", user=alice, room=room.pk.hex, message=second.pk)
        response = assert_broadcast(send(request), request, [alice.pk])
        assert (response["room"], response["message"], response["last_read_id"], response["unread_count"]) == (
            room.pk.hex, second.pk, second.pk, 1)
        listing = send(bus_request("list_rooms", user=alice)).envelope["response"]["rooms"]
        assert listing[0]["unread_count"] == 1

    def test_the_mark_only_moves_forward(self, alice, bob, room):
        first, second = post(bob, room, "a"), post(bob, room, "b")
        send(bus_request("mark_read", user=alice, room=room.pk.hex, message=second.pk))
        response = send(bus_request("mark_read", user=alice, room=room.pk.hex, message=first.pk)).envelope
        assert (response["response"]["last_read_id"], response["response"]["unread_count"]) == (second.pk, 0)

    def test_the_mark_stops_at_the_newest_message(self, alice, bob, room):
        newest = post(bob, room, "a")
        response = send(bus_request("mark_read", user=alice, room=room.pk.hex, message=10**12)).envelope
        assert response["response"]["last_read_id"] == newest.pk
        post(bob, room, "later")
        assert Membership.objects.get(room=room, user=alice).last_read_id == newest.pk
        listing = send(bus_request("list_rooms", user=alice)).envelope["response"]["rooms"]
        assert listing[0]["unread_count"] == 1

    @pytest.mark.parametrize("message", [None, -1, "3", True, 1.5])
    def test_malformed(self, alice, room, message):
        request = bus_request("mark_read", user=alice, room=room.pk.hex, message=message)
        assert_error(send(request), request, "invalid_message_format")

    def test_non_member(self, carol, room):
        request = bus_request("mark_read", user=carol, room=room.pk.hex, message=0)
        assert_error(send(request), request, "invalid_room_id")


@pytest.mark.action("typing")
class TestTyping:
    def test_goes_to_the_other_members_only_and_is_not_stored(self, alice, bob, carol, make_room):
        group = make_room(alice, bob, carol)
        request = bus_request("typing", user=alice, room=group.pk.hex)
        outgoing = send(request)
        response = assert_broadcast(outgoing, request, [bob.pk, carol.pk])
        assert (response["room"], response["user"]) == (group.pk.hex, {"username": "alice"})
        # The gateway must not hand it back to the typist's own connection.
        assert outgoing.envelope["requester_reply"] is False
        assert not ChatMessage.objects.exists()

    def test_alone_in_a_room(self, alice, make_room):
        solo = make_room(alice)
        request = bus_request("typing", user=alice, room=solo.pk.hex)
        assert assert_broadcast(send(request), request, [])["user"] == {"username": "alice"}

    def test_non_member(self, carol, room):
        request = bus_request("typing", user=carol, room=room.pk.hex)
        assert_error(send(request), request, "invalid_room_id")

    def test_other_replies_have_no_requester_reply_key(self, alice, room):
        outgoing = send(bus_request("new_message", user=alice, room=room.pk.hex, text="hi"))
        assert "requester_reply" not in outgoing.envelope


@pytest.mark.action("who_is_online")
class TestWhoIsOnline:
    def test_online_members_sorted(self, alice, bob, carol, make_room):
        group = make_room(alice, bob, carol)
        asked: list[set[int]] = []

        def online(user_ids):
            asked.append(set(user_ids))
            return {carol.pk, alice.pk, 10**9}  # a stranger's id is never shown

        request = bus_request("who_is_online", user=bob, room=group.pk.hex)
        outgoing = dispatch.process(json.dumps(request), RESPONSE_TOPIC, online)
        response = assert_private(outgoing, request)
        assert (response["room"], response["online"]) == (group.pk.hex, ["alice", "carol"])
        assert asked == [{alice.pk, bob.pk, carol.pk}]

    def test_non_member_is_not_asked_about(self, carol, room):
        request = bus_request("who_is_online", user=carol, room=room.pk.hex)
        outgoing = dispatch.process(json.dumps(request), RESPONSE_TOPIC, lambda ids: pytest.fail("asked"))
        assert_error(outgoing, request, "invalid_room_id")

    def test_presence_store_down_is_a_server_error(self, alice, room):
        def online(user_ids):
            raise ConnectionError("redis down")

        request = bus_request("who_is_online", user=alice, room=room.pk.hex)
        assert_error(dispatch.process(json.dumps(request), RESPONSE_TOPIC, online), request, "server_error")


@pytest.mark.action("sync")
class TestSync:
    def test_everything_after_the_mark_from_every_room_in_id_order(self, alice, bob, carol, make_room):
        one, two, other = make_room(alice, bob), make_room(alice, carol), make_room(bob, carol)
        seen = post(bob, one, "seen")
        missed = [post(bob, one, "1"), post(carol, other, "not alice's"), post(carol, two, "2"),
                  post(bob, one, "3")]
        request = bus_request("sync", user=alice, after=seen.pk)
        response = assert_private(send(request), request)
        assert [m["text"] for m in response["messages"]] == ["1", "2", "3"]
        assert [m["id"] for m in response["messages"]] == sorted(m.pk for m in missed if m.room_id != other.pk)
        assert response["has_more"] is False

    def test_pages_without_gaps_or_repeats(self, alice, bob, room):
        stored = [post(bob, room, str(n)) for n in range(7)]
        after, seen, more = 0, [], True
        while more:
            response = send(bus_request("sync", user=alice, after=after, limit=3)).envelope["response"]
            seen += [m["id"] for m in response["messages"]]
            more = response["has_more"]
            after = seen[-1]
        assert seen == [m.pk for m in stored]

    def test_after_defaults_to_the_beginning(self, alice, bob, room):
        post(bob, room, "x")
        response = send(bus_request("sync", user=alice)).envelope["response"]
        assert [m["text"] for m in response["messages"]] == ["x"]

    @pytest.mark.parametrize("fields", [{"limit": 0}, {"limit": 501}, {"limit": "1"}, {"after": -5},
                                        {"after": "1"}, {"after": True}])
    def test_out_of_range_or_wrong_type(self, alice, fields):
        request = bus_request("sync", user=alice, **fields)
        assert_error(send(request), request, "invalid_message_format")

    def test_rooms_left_are_not_synced(self, alice, bob, room):
        send(bus_request("leave_room", user=alice, room=room.pk.hex))
        post(bob, room, "after leaving")
        assert send(bus_request("sync", user=alice)).envelope["response"]["messages"] == []


@pytest.mark.parametrize("action, fields", [
    ("list_rooms", {}), ("create_room", {"name": "x", "members": []}), ("add_members", {"members": []}),
    ("leave_room", {}), ("direct_message", {"to": "bob", "text": "x"}), ("load_history", {}),
    ("mark_read", {"message": 1}), ("typing", {}), ("who_is_online", {}), ("sync", {}),
])
def test_every_action_requires_authentication(action, fields, room):
    request = bus_request(action, room=room.pk.hex, **fields)
    assert_error(send(request), request, "authentication_required")


@pytest.mark.parametrize("action", ["add_members", "leave_room", "load_history", "mark_read", "typing",
                                    "who_is_online"])
def test_non_member_and_nonexistent_room_get_the_same_reply(action, carol, room):
    fields = {"members": ["carol"], "message": 1}
    replies = []
    for room_id in (room.pk.hex, "0" * 32):
        request = bus_request(action, user=carol, room=room_id, **fields)
        request["uuid"] = "same"
        outgoing = dispatch.process(json.dumps(request), RESPONSE_TOPIC, lambda ids: set())
        response = assert_error(outgoing, request, "invalid_room_id")
        replies.append({k: v for k, v in response.items() if k != "room"})
    assert replies[0] == replies[1]


@pytest.mark.parametrize("action", ["add_members", "leave_room", "load_history", "mark_read", "typing",
                                    "who_is_online"])
@pytest.mark.parametrize("room_id, code", [(None, "invalid_message_format"), (42, "invalid_message_format"),
                                           ("abc", "invalid_room_id"), ("z" * 32, "invalid_room_id")])
def test_bad_room_ids(action, room_id, code, alice):
    request = bus_request(action, user=alice, room=room_id, members=["alice"], message=1)
    assert_error(dispatch.process(json.dumps(request), RESPONSE_TOPIC, lambda ids: set()), request, code)
