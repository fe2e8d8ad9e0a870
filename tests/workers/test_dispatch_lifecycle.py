"""`workers.dispatch` for the message lifecycle (edit_message, delete_message, add_reaction,
remove_reaction) and `sync` by cursor, each as the bus envelope a worker publishes."""

from __future__ import annotations

import pytest

from chat.models import ChatMessage, ChatReaction

from .test_dispatch import MESSAGE_KEYS, assert_error, bus_request, send
from .test_dispatch_rooms import assert_broadcast, assert_private

CHANGE_KEYS = {"uuid", "action", "room", "status", "message", "cursor"}
# Committed for real: on PostgreSQL the feed shows a change once every older transaction has ended.
pytestmark = pytest.mark.django_db(transaction=True)


def posted(user, room, text: str = "hello") -> dict:
    request = bus_request("new_message", user=user, room=room.pk.hex, text=text)
    return send(request).envelope["response"]


def change(action: str, user, **fields) -> tuple[dict, dict]:
    request = bus_request(action, user=user, **fields)
    return request, send(request).envelope


class TestChangeReplies:
    @pytest.mark.action("edit_message")
    def test_edit_goes_to_every_member_with_the_message_and_a_cursor(self, alice, bob, carol, make_room):
        room = make_room(alice, bob, carol)
        message = posted(alice, room)["message"]
        request = bus_request("edit_message", user=alice, message=message["id"], text="hello, all")
        response = assert_broadcast(send(request), request, [alice.pk, bob.pk, carol.pk])
        assert set(response) == CHANGE_KEYS and set(response["message"]) == MESSAGE_KEYS
        assert response["room"] == room.pk.hex and isinstance(response["cursor"], str)
        assert response["message"]["text"] == "hello, all"
        assert response["message"]["edited_at"] >= message["timestamp"]

    @pytest.mark.action("edit_message")
    def test_the_same_request_again_is_the_same_success_without_a_new_change(self, alice, room):
        message = posted(alice, room)["message"]
        request = bus_request("edit_message", user=alice, message=message["id"], text="fixed")
        first = send(request).envelope["response"]
        again = send(request).envelope["response"]
        assert again["status"] == "success" and again["message"] == first["message"]
        assert "cursor" in first and "cursor" not in again

    @pytest.mark.action("delete_message")
    def test_delete_goes_to_every_member_as_a_tombstone(self, alice, bob, room):
        message = posted(alice, room, "regret")["message"]
        request = bus_request("delete_message", user=alice, message=message["id"])
        response = assert_broadcast(send(request), request, [alice.pk, bob.pk])
        assert set(response) == CHANGE_KEYS
        assert {key: response["message"][key] for key in ("id", "user", "room", "timestamp")} == {
            key: message[key] for key in ("id", "user", "room", "timestamp")}
        assert (response["message"]["deleted"], response["message"]["text"], response["message"]["reactions"]) == (
            True, "", [])
        assert ChatMessage.objects.get(pk=message["id"]).text == ""
        again = bus_request("delete_message", user=alice, message=message["id"])
        assert assert_broadcast(send(again), again, [alice.pk, bob.pk])["message"]["deleted"] is True

    @pytest.mark.action("add_reaction")
    @pytest.mark.action("remove_reaction")
    def test_reactions_go_to_every_member_with_the_whole_message(self, alice, bob, room):
        message = posted(alice, room)["message"]
        request = bus_request("add_reaction", user=bob, message=message["id"], emoji="🎉")
        response = assert_broadcast(send(request), request, [alice.pk, bob.pk])
        assert set(response) == CHANGE_KEYS
        assert response["message"]["reactions"] == [{"emoji": "🎉", "users": ["bob"]}]
        request = bus_request("remove_reaction", user=bob, message=message["id"], emoji="🎉")
        response = assert_broadcast(send(request), request, [alice.pk, bob.pk])
        assert response["message"]["reactions"] == [] and not ChatReaction.objects.exists()
        request = bus_request("remove_reaction", user=bob, message=message["id"], emoji="🎉")
        assert assert_broadcast(send(request), request, [alice.pk, bob.pk])["status"] == "success"


class TestChangeErrors:
    @pytest.mark.parametrize("action, fields", [("edit_message", {"text": "x"}), ("delete_message", {}),
                                                ("add_reaction", {"emoji": "👍"}), ("remove_reaction", {"emoji": "👍"})])
    def test_a_message_of_a_room_not_the_users_is_answered_as_no_message(self, alice, carol, room, action, fields):
        message = posted(alice, room)["message"]
        for message_id in (message["id"], message["id"] + 100):
            request = bus_request(action, user=carol, message=message_id, **fields)
            assert_error(send(request), request, "invalid_message_id")

    @pytest.mark.parametrize("action, fields", [("edit_message", {"text": "x"}), ("delete_message", {})])
    def test_another_members_message_is_forbidden(self, alice, bob, room, action, fields):
        message = posted(alice, room)["message"]
        request = bus_request(action, user=bob, message=message["id"], **fields)
        assert_error(send(request), request, "forbidden")

    @pytest.mark.parametrize("action, fields", [("edit_message", {"text": "x"}), ("add_reaction", {"emoji": "👍"}),
                                                ("remove_reaction", {"emoji": "👍"})])
    def test_a_deleted_message_takes_no_edit_or_reaction(self, alice, room, action, fields):
        message = posted(alice, room)["message"]
        send(bus_request("delete_message", user=alice, message=message["id"]))
        request = bus_request(action, user=alice, message=message["id"], **fields)
        assert_error(send(request), request, "message_deleted")

    @pytest.mark.parametrize("emoji", ["", "   ", "x" * 33])
    def test_an_emoji_of_0_or_more_than_32_characters_or_only_space(self, alice, room, emoji):
        message = posted(alice, room)["message"]
        request = bus_request("add_reaction", user=alice, message=message["id"], emoji=emoji)
        assert_error(send(request), request, "invalid_emoji")

    @pytest.mark.parametrize("text, code", [("", "empty_text"), ("x" * 4001, "text_too_long")])
    def test_edited_text_is_checked_as_a_new_messages(self, alice, room, text, code):
        message = posted(alice, room)["message"]
        request = bus_request("edit_message", user=alice, message=message["id"], text=text)
        assert_error(send(request), request, code)

    @pytest.mark.parametrize("action", ["edit_message", "delete_message", "add_reaction", "remove_reaction"])
    def test_without_a_session_authentication_is_required(self, alice, room, action):
        request = bus_request(action, message=1, text="x", emoji="👍")
        assert_error(send(request), request, "authentication_required")


@pytest.mark.action("sync")
class TestSyncByCursor:
    def test_since_now_then_every_change_missed_as_events(self, alice, bob, room):
        request = bus_request("sync", user=bob, since="")
        start = assert_private(send(request), request)
        assert set(start) == {"uuid", "action", "status", "events", "cursor", "has_more"}
        assert (start["events"], start["has_more"]) == ([], False)
        message = posted(alice, room)["message"]
        edited = change("edit_message", alice, message=message["id"], text="edited")[1]["response"]
        request = bus_request("sync", user=bob, since=start["cursor"])
        caught_up = assert_private(send(request), request)
        [event] = caught_up["events"]
        assert event == {"action": "edit_message", "room": room.pk.hex, "message": edited["message"],
                         "cursor": event["cursor"]}
        assert caught_up["has_more"] is False

    def test_resuming_from_a_live_replys_cursor_misses_nothing_after_it(self, alice, bob, room):
        first = posted(alice, room, "one")
        second = posted(bob, room, "two")
        request = bus_request("sync", user=bob, since=first["cursor"])
        ids = [event["message"]["id"] for event in send(request).envelope["response"]["events"]]
        # The live cursor may hand back the change it came with, never skips a later one.
        assert second["message"]["id"] in ids and set(ids) <= {first["message"]["id"], second["message"]["id"]}

    @pytest.mark.parametrize("fields", [{"since": 5}, {"since": "nope"}, {"since": None}, {"since": "", "limit": 0},
                                        {"since": "", "limit": 501}])
    def test_a_since_or_limit_out_of_range(self, alice, fields):
        request = bus_request("sync", user=alice, **fields)
        assert_error(send(request), request, "invalid_message_format")

    def test_an_expired_cursor(self, alice, bob, room):
        import datetime

        from django.utils import timezone

        from chat import feed
        from chat.models import ChatChange
        old = posted(alice, room)["cursor"]
        posted(alice, room)
        ChatChange.objects.update(at=timezone.now() - datetime.timedelta(days=31))
        feed.prune(timezone.now() - datetime.timedelta(days=30))
        request = bus_request("sync", user=bob, since=old)
        assert_error(send(request), request, "cursor_expired")

    def test_the_version_1_form_is_unchanged(self, alice, bob, room):
        message = posted(alice, room)["message"]
        request = bus_request("sync", user=bob, after=0)
        response = assert_private(send(request), request)
        assert set(response) == {"uuid", "action", "status", "messages", "has_more"}
        assert [m["id"] for m in response["messages"]] == [message["id"]]
