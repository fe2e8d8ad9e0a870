"""The change feed (`chat.feed`) and `sync` by cursor (`chat.catchup`): what a user gets, in what
order, collapsed how, at what cost, and when a cursor has expired."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import catchup, errors, feed, lifecycle, reading, rooms, services
from chat.models import ChatChange, ChatMessage, FeedState

Kind = ChatChange.Kind
# Committed for real: on PostgreSQL a change is seen once every older transaction has ended, and a
# test in a transaction of its own would never see one.
pytestmark = pytest.mark.django_db(transaction=True)


def now_cursor(user) -> str:
    first = catchup.sync_since(user, "", None)
    assert first.events == [] and not first.has_more
    return first.cursor


def everything(user, since: str, limit: int = 500) -> tuple[list[dict], str]:
    """Every event after `since`, page after page, and the last cursor."""
    events: list[dict] = []
    while True:
        page = catchup.sync_since(user, since, limit)
        events += page.events
        since = page.cursor
        if not page.has_more:
            return events, since


def post(user, room, text="hello", uuid=None):
    return services.post_message(user, room.pk.hex, text, uuid)


class TestSince:
    def test_from_now_there_is_nothing_then_each_change_in_order_with_its_own_cursor(self, alice, bob, room):
        cursor = now_cursor(alice)
        first = post(bob, room, "one")
        second = post(alice, room, "two")
        events, _ = everything(alice, cursor)
        assert [(event["action"], event["message"]["id"]) for event in events] == [
            ("new_message", first.message.pk), ("new_message", second.message.pk)]
        assert all(isinstance(event["cursor"], str) and "uuid" not in event and "status" not in event
                   for event in events)
        # Resuming from an event's cursor gives what came after it.
        rest, _ = everything(alice, events[0]["cursor"])
        assert [event["message"]["id"] for event in rest] == [second.message.pk]

    def test_an_event_is_the_live_reply_without_uuid_and_status(self, alice, bob, room):
        from chat import replies
        cursor = now_cursor(bob)
        posted = post(alice, room, "hi", "u-1")
        live = replies.message_posted({"uuid": "u-1", "action": "new_message", "room": room.pk.hex}, posted)
        [event] = everything(bob, cursor)[0]
        del live["uuid"], live["status"], live["cursor"], event["cursor"]
        assert event == live

    def test_several_changes_of_a_message_come_as_one_event_with_its_latest_state(self, alice, bob, room):
        cursor = now_cursor(bob)
        posted = post(alice, room, "draft")
        other = post(bob, room, "between")
        lifecycle.edit_message(alice, posted.message.pk, "final", None)
        lifecycle.add_reaction(bob, posted.message.pk, "👍", None)
        events, _ = everything(bob, cursor)
        assert [(event["action"], event["message"]["id"]) for event in events] == [
            ("new_message", other.message.pk), ("add_reaction", posted.message.pk)]
        assert events[1]["message"]["text"] == "final" and events[1]["message"]["edited_at"] is not None
        assert events[1]["message"]["reactions"] == [{"emoji": "👍", "users": ["bob"]}]

    def test_a_deleted_message_comes_as_a_tombstone(self, alice, bob, room):
        cursor = now_cursor(bob)
        posted = post(alice, room, "oops")
        lifecycle.delete_message(alice, posted.message.pk, None)
        [event] = everything(bob, cursor)[0]
        assert event["action"] == "delete_message"
        assert (event["message"]["deleted"], event["message"]["text"], event["message"]["reactions"]) == (True, "", [])

    def test_rooms_members_and_departures(self, alice, bob, carol):
        cursor = now_cursor(bob)
        summary = rooms.create_room(alice, "plans", ["bob"])
        rooms.add_members(alice, summary.room.pk.hex, ["carol"])
        rooms.leave_room(carol, summary.room.pk.hex)
        events, _ = everything(bob, cursor)
        assert [event["action"] for event in events] == ["add_members", "leave_room"]
        assert events[0]["room"]["id"] == summary.room.pk.hex
        assert {member["username"] for member in events[0]["room"]["members"]} == {"alice", "bob"}
        assert events[1] == {"action": "leave_room", "room": summary.room.pk.hex, "user": {"username": "carol"},
                             "cursor": events[1]["cursor"]}

    def test_the_leaver_gets_their_departure_and_nothing_of_the_room_after_it(self, alice, bob, room):
        cursor = now_cursor(bob)
        rooms.leave_room(bob, room.pk.hex)
        post(alice, room, "after bob left")
        events, _ = everything(bob, cursor)
        assert [(event["action"], event["room"]) for event in events] == [("leave_room", room.pk.hex)]

    def test_read_markers_are_the_users_own_only(self, alice, bob, room):
        cursors = {user: now_cursor(user) for user in (alice, bob)}
        posted = post(alice, room)
        reading.mark_read(bob, room.pk.hex, posted.message.pk)
        alice_events, _ = everything(alice, cursors[alice])
        bob_events, _ = everything(bob, cursors[bob])
        assert [event["action"] for event in alice_events] == ["new_message"]
        assert [event["action"] for event in bob_events] == ["new_message", "mark_read"]
        assert bob_events[1] | {"cursor": None} == {
            "action": "mark_read", "room": room.pk.hex, "message": posted.message.pk,
            "last_read_id": posted.message.pk, "unread_count": 0, "cursor": None}

    def test_a_mark_that_does_not_move_stores_no_change(self, alice, bob, room):
        posted = post(alice, room)
        assert reading.mark_read(bob, room.pk.hex, posted.message.pk).cursor is not None
        assert reading.mark_read(bob, room.pk.hex, posted.message.pk).cursor is None
        assert ChatChange.objects.filter(kind=Kind.MARK_READ).count() == 1

    def test_direct_messages_are_events_of_their_own_action(self, alice, bob):
        cursor = now_cursor(bob)
        posted = rooms.direct_message(alice, "bob", "psst", None)
        [event] = everything(bob, cursor)[0]
        assert (event["action"], event["room"], event["message"]["text"]) == (
            "direct_message", posted.message.room_id.hex, "psst")

    def test_a_non_members_rooms_are_not_theirs(self, alice, bob, carol, room):
        cursor = now_cursor(carol)
        post(alice, room)
        assert everything(carol, cursor)[0] == []


class TestPages:
    def test_limit_and_has_more_walk_every_change_once(self, alice, bob, room):
        cursor = now_cursor(bob)
        posted = [post(alice, room, f"m{n}").message.pk for n in range(7)]
        page = catchup.sync_since(bob, cursor, 3)
        assert len(page.events) == 3 and page.has_more
        events, last = everything(bob, cursor, limit=3)
        assert [event["message"]["id"] for event in events] == posted
        assert catchup.sync_since(bob, last, 3).events == []

    def test_the_cursor_moves_on_even_when_nothing_was_the_users(self, alice, bob, carol, make_room):
        cursor = now_cursor(carol)
        elsewhere = make_room(alice, bob)
        post(alice, elsewhere)
        page = catchup.sync_since(carol, cursor, None)
        assert page.events == [] and feed.parse_cursor(page.cursor) > feed.parse_cursor(cursor)

    @pytest.mark.parametrize("since", ["x", "1", "1.2.3", "-1.2", " 1.2", "1.2 ", 12, None, ["1.2"], "9" * 20 + ".1"])
    def test_a_since_that_is_no_cursor_is_a_format_error(self, alice, since):
        with pytest.raises(errors.InvalidMessageFormat):
            catchup.sync_since(alice, since, None)

    @pytest.mark.parametrize("limit", [0, 501, "5", 1.5, True])
    def test_the_limit_is_1_to_500(self, alice, limit):
        with pytest.raises(errors.InvalidMessageFormat):
            catchup.sync_since(alice, "", limit)

    def test_500_events_cost_the_same_queries_as_5(self, alice, bob, carol, room):
        def cost(count: int) -> int:
            cursor = now_cursor(bob)
            for n in range(count):
                message = post(alice, room, f"m{n}").message
                if n < 3:  # three more changes, which come with their messages' events
                    lifecycle.add_reaction(bob, message.pk, "👍", None)
            rooms.create_room(alice, f"r{count}", ["bob"])
            reading.mark_read(bob, room.pk.hex, message.pk)
            rooms.leave_room(alice, rooms.create_room(bob, f"s{count}", ["alice"]).room.pk.hex)
            with CaptureQueriesContext(connection) as queries:
                page = catchup.sync_since(bob, cursor, 500)
            assert not page.has_more and len(page.events) == count + 4
            return len(queries)

        few = cost(5)
        assert cost(493) == few  # 500 changes
        assert few <= 12


class TestRetention:
    def age(self, days: int) -> None:
        ChatChange.objects.update(at=timezone.now() - datetime.timedelta(days=days))

    def test_pruning_deletes_the_old_changes_and_expires_the_cursors_before_them(self, alice, bob, room):
        cursor = now_cursor(bob)
        post(alice, room, "old")
        self.age(40)
        kept_from = now_cursor(bob)
        post(alice, room, "new")
        pruned = feed.prune(timezone.now() - datetime.timedelta(days=30))
        assert pruned.changes == 1 and ChatChange.objects.count() == 1
        with pytest.raises(errors.CursorExpired):
            catchup.sync_since(bob, cursor, None)
        events, _ = everything(bob, kept_from)
        assert [event["message"]["text"] for event in events] == ["new"]
        # The messages themselves stay: only the feed is pruned.
        assert ChatMessage.objects.count() == 2

    def test_pruning_stops_at_the_first_change_young_enough(self, alice, room):
        for n in range(5):
            post(alice, room, f"m{n}")
        oldest = list(ChatChange.objects.order_by("id").values_list("id", flat=True))
        ChatChange.objects.filter(id__in=oldest[:3]).update(at=timezone.now() - datetime.timedelta(days=31))
        assert feed.prune(timezone.now() - datetime.timedelta(days=30), batch=2).changes == 3
        assert list(ChatChange.objects.values_list("id", flat=True)) == oldest[3:]
        state = FeedState.objects.get()
        assert feed.Position(state.pruned_xid, state.pruned_id) == max(
            feed.Position(xid, pk) for pk, xid in [(oldest[2], state.pruned_xid)])

    def test_a_pruning_that_commits_while_a_page_is_read_expires_the_cursor(self, alice, bob, room, monkeypatch):
        cursor = now_cursor(bob)
        post(alice, room, "old")
        self.age(40)
        post(alice, room, "new")
        real_now = feed.now

        def pruned_meanwhile():
            # The pruner commits after the page began, before its changes are read.
            feed.prune(timezone.now() - datetime.timedelta(days=30))
            return real_now()

        monkeypatch.setattr(feed, "now", pruned_meanwhile)
        with pytest.raises(errors.CursorExpired):
            feed.read(bob.pk, feed.parse_cursor(cursor), 10)

    def test_nothing_old_prunes_nothing(self, alice, room):
        post(alice, room)
        assert feed.prune(timezone.now() - datetime.timedelta(days=30)).changes == 0
        assert not FeedState.objects.exists()


def test_the_version_1_sync_still_answers_new_messages_by_id(alice, bob, room):
    first = post(alice, room, "one").message
    second = post(bob, room, "two").message
    lifecycle.edit_message(alice, first.pk, "one, edited", None)
    page = reading.sync(bob, first.pk, None)
    assert [message.pk for message in page.messages] == [second.pk]
