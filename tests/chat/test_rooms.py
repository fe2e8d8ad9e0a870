"""`chat.rooms` and `chat.reading`: the room list's cost, one direct room per pair under a race,
and the read marks behind unread counts."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from chat import errors, reading, rooms
from chat.models import ChatMessage, ChatRoom, Membership

User = get_user_model()


def fill(user, others, room_count: int) -> list[ChatRoom]:
    """`room_count` rooms of `user` with 3 members and 2 messages each."""
    made = ChatRoom.objects.bulk_create([ChatRoom(name=f"r{n}") for n in range(room_count)])
    Membership.objects.bulk_create([Membership(room=room, user=member) for room in made
                                    for member in (user, *others)])
    ChatMessage.objects.bulk_create([ChatMessage(room=room, user=others[n % len(others)], text=f"{room.name}-{n}")
                                     for room in made for n in range(2)])
    return made


class TestListRoomsCost:
    def count_queries(self, user) -> tuple[int, list]:
        with CaptureQueriesContext(connection) as queries:
            summaries = rooms.list_rooms(user)
        return len(queries), summaries

    def test_a_fixed_number_of_queries_whatever_the_number_of_rooms(self, alice, bob, carol, make_user):
        dave = make_user("dave")
        fill(alice, [bob, carol], 20)
        few, summaries = self.count_queries(alice)
        assert len(summaries) == 20
        fill(dave, [bob, carol], 200)
        many, summaries = self.count_queries(dave)
        assert len(summaries) == 200
        assert few == many == 4
        assert all(s.unread_count == 2 and len(s.members) == 3 and s.last_message is not None for s in summaries)

    def test_200_rooms_in_4_queries(self, alice, bob, django_assert_num_queries):
        fill(alice, [bob], 200)
        with django_assert_num_queries(4):
            summaries = rooms.list_rooms(alice)
        # Newest activity first: the rooms were filled in order, so the last one has the newest message.
        newest = [s.last_message.pk for s in summaries]
        assert newest == sorted(newest, reverse=True)

    def test_a_user_in_no_room_costs_one_query(self, carol, django_assert_num_queries):
        with django_assert_num_queries(1):
            assert rooms.list_rooms(carol) == []


class TestUnread:
    def test_counts_follow_the_read_mark(self, alice, bob, room):
        posted = [ChatMessage.objects.create(user=bob, room=room, text=str(n)) for n in range(5)]
        assert rooms.list_rooms(alice)[0].unread_count == 5
        mark = reading.mark_read(alice, room.pk.hex, posted[2].pk)
        assert (mark.last_read_id, mark.unread_count) == (posted[2].pk, 2)
        assert rooms.list_rooms(alice)[0].unread_count == 2
        assert rooms.list_rooms(bob)[0].unread_count == 0  # marks are per user, and these are his own

    def test_own_messages_are_never_unread(self, alice, bob, room):
        ChatMessage.objects.create(user=alice, room=room, text="mine")
        theirs = ChatMessage.objects.create(user=bob, room=room, text="theirs")
        ChatMessage.objects.create(user=alice, room=room, text="mine again")
        assert rooms.list_rooms(alice)[0].unread_count == 1
        assert rooms.list_rooms(bob)[0].unread_count == 2
        assert reading.mark_read(alice, room.pk.hex, 0).unread_count == 1
        assert reading.mark_read(alice, room.pk.hex, theirs.pk).unread_count == 0

    def test_newcomers_start_with_nothing_unread(self, alice, bob, carol, room):
        ChatMessage.objects.create(user=bob, room=room, text="old")
        rooms.add_members(alice, room.pk.hex, ["carol"])
        assert rooms.list_rooms(carol)[0].unread_count == 0
        ChatMessage.objects.create(user=bob, room=room, text="new")
        assert rooms.list_rooms(carol)[0].unread_count == 1


class TestDirectRooms:
    def test_one_room_per_pair_whichever_way(self, alice, bob, carol):
        first, _ = rooms.direct_room(alice, "bob")
        second, _ = rooms.direct_room(bob, "alice")
        third, _ = rooms.direct_room(alice, "carol")
        assert first.pk == second.pk != third.pk
        assert first.is_direct and first.direct_key == f"{min(alice.pk, bob.pk)}:{max(alice.pk, bob.pk)}"

    def test_no_direct_room_with_oneself(self, alice):
        with pytest.raises(errors.InvalidUser):
            rooms.direct_room(alice, "alice")


@pytest.mark.django_db(transaction=True)
def test_first_messages_racing_make_one_direct_room(make_user, monkeypatch):
    """Both users send their first direct message at the same moment, from two threads (two
    database connections), and both find no room yet: the unique direct_key leaves one room
    with both messages."""
    alice, bob = make_user("alice"), make_user("bob")
    both_looked = threading.Barrier(2)
    outcomes: list[object] = []
    lookup = rooms._existing_direct_room

    def look_then_wait(key: str):
        found = lookup(key)
        both_looked.wait(timeout=10)  # neither creates the room before both have seen there is none
        return found

    monkeypatch.setattr(rooms, "_existing_direct_room", look_then_wait)

    def send(sender, to: str) -> None:
        try:
            outcomes.append(rooms.direct_message(sender, to, f"hi {to}", None).message.room_id)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(alice, "bob")), threading.Thread(target=send, args=(bob, "alice"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == 2 and not any(isinstance(o, Exception) for o in outcomes), outcomes
    assert outcomes[0] == outcomes[1]
    room = ChatRoom.objects.get(is_direct=True)
    assert sorted(room.messages.values_list("text", flat=True)) == ["hi alice", "hi bob"]
    assert sorted(room.users.values_list("username", flat=True)) == ["alice", "bob"]
