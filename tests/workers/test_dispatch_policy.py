"""The permission policy (CHAT["POLICY"], docs/policy.md) over the workers: each decision refused
is the `forbidden` error reply to the requester alone, with nothing stored; the chat's own checks
come first. Over the REST API: tests/chat/test_policy.py."""

from __future__ import annotations

import json

import pytest

from chat.models import ChatMessage, ChatRoom, Membership
from workers import dispatch

from .test_dispatch import RESPONSE_TOPIC, assert_error, bus_request, send
from .test_dispatch_rooms import assert_broadcast


@pytest.fixture
def use_policy(settings):
    def use(name: str) -> None:
        settings.CHAT = {**settings.CHAT, "POLICY": f"tests.chat.policies.{name}"}

    return use


def refused(request) -> None:
    response = assert_error(send(request), request, "forbidden")
    assert response["error_message"] == "Not allowed"


@pytest.mark.action("new_message")
class TestNewMessage:
    def test_refused_and_not_stored(self, alice, room, use_policy):
        use_policy("NoPosting")
        refused(bus_request("new_message", user=alice, room=room.pk.hex, text="hi"))
        assert not ChatMessage.objects.exists()

    def test_membership_text_and_account_come_first(self, alice, carol, make_user, room, use_policy):
        use_policy("NoPosting")
        request = bus_request("new_message", user=carol, room=room.pk.hex, text="hi")
        assert_error(send(request), request, "invalid_room_id")
        request = bus_request("new_message", user=alice, room=room.pk.hex, text=" ")
        assert_error(send(request), request, "empty_text")
        alice.is_active = False
        alice.save()
        request = bus_request("new_message", user=alice, room=room.pk.hex, text="hi")
        assert_error(send(request), request, "authentication_required")

    def test_in_a_batch_each_message_is_decided_alone(self, alice, bob, room, use_policy):
        use_policy("BobIsMuted")
        requests = [bus_request("new_message", user=user, room=room.pk.hex, text=text)
                    for user, text in [(alice, "one"), (bob, "muted"), (alice, "two")]]
        answered = dispatch.process_batch([json.dumps(r).encode() for r in requests], RESPONSE_TOPIC)
        assert_broadcast(answered[0], requests[0], [alice.pk, bob.pk])
        assert_error(answered[1], requests[1], "forbidden")
        assert_broadcast(answered[2], requests[2], [alice.pk, bob.pk])
        assert list(ChatMessage.objects.order_by("id").values_list("text", flat=True)) == ["one", "two"]

    def test_the_default_allows_it(self, alice, bob, room):
        request = bus_request("new_message", user=alice, room=room.pk.hex, text="hi")
        assert assert_broadcast(send(request), request, [alice.pk, bob.pk])["message"]["text"] == "hi"


@pytest.mark.action("direct_message")
class TestDirectMessage:
    def test_refused_makes_no_room(self, alice, bob, use_policy):
        use_policy("NoDirectMessages")
        refused(bus_request("direct_message", user=alice, to="bob", text="hi"))
        assert not ChatRoom.objects.exists() and not ChatMessage.objects.exists()

    def test_text_and_user_come_first(self, alice, bob, use_policy):
        use_policy("NoDirectMessages")
        request = bus_request("direct_message", user=alice, to="bob", text="")
        assert_error(send(request), request, "empty_text")
        request = bus_request("direct_message", user=alice, to="nobody", text="hi")
        assert_error(send(request), request, "invalid_user")

    def test_the_default_allows_it(self, alice, bob):
        request = bus_request("direct_message", user=alice, to="bob", text="hi")
        assert_broadcast(send(request), request, [alice.pk, bob.pk])


@pytest.mark.action("create_room")
class TestCreateRoom:
    def test_refused_makes_no_room(self, alice, bob, use_policy):
        use_policy("NoNewRooms")
        refused(bus_request("create_room", user=alice, name="new", members=["bob"]))
        assert not ChatRoom.objects.exists() and not Membership.objects.exists()

    def test_an_unknown_member_comes_first(self, alice, use_policy):
        use_policy("NoNewRooms")
        request = bus_request("create_room", user=alice, name="new", members=["nobody"])
        assert_error(send(request), request, "invalid_user")

    def test_the_default_allows_it(self, alice, bob):
        request = bus_request("create_room", user=alice, name="new", members=["bob"])
        assert_broadcast(send(request), request, [alice.pk, bob.pk])


@pytest.mark.action("add_members")
class TestAddMembers:
    def test_refused_adds_no_one(self, alice, carol, room, use_policy):
        use_policy("NoNewMembers")
        before = set(Membership.objects.values_list("room_id", "user_id"))
        refused(bus_request("add_members", user=alice, room=room.pk.hex, members=["carol"]))
        assert set(Membership.objects.values_list("room_id", "user_id")) == before

    def test_a_non_member_still_gets_invalid_room_id(self, carol, room, use_policy):
        use_policy("NoNewMembers")
        request = bus_request("add_members", user=carol, room=room.pk.hex, members=["carol"])
        assert_error(send(request), request, "invalid_room_id")

    def test_the_default_allows_it(self, alice, bob, carol, room):
        request = bus_request("add_members", user=alice, room=room.pk.hex, members=["carol"])
        assert_broadcast(send(request), request, [alice.pk, bob.pk, carol.pk])
