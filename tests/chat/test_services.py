"""Unit tests of `chat.services`: the domain operations shared by the bus workers and the REST API."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from chat import errors, services, statements
from chat.models import ChatMessage, ChatRoom
from chat.serializers import MessageSerializer


def user_for_token(token):
    """users_for_tokens for one token: its user, or the error raised."""
    [outcome] = services.users_for_tokens([token])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class TestUserForToken:
    def test_known_token_gives_its_user(self, alice):
        assert user_for_token(Token.objects.get(user=alice).key) == alice

    @pytest.mark.parametrize("token", ["no-such-token", "", "x" * 129])
    def test_unknown_token_is_refused(self, alice, token):
        with pytest.raises(errors.InvalidToken):
            user_for_token(token)

    @pytest.mark.parametrize("token", [None, 42, ["a"], {"key": "a"}])
    def test_non_string_token_is_refused(self, alice, token):
        with pytest.raises(errors.InvalidToken):
            user_for_token(token)

    def test_one_query_gives_the_user_and_its_name(self, alice, django_assert_num_queries):
        key = Token.objects.get(user=alice).key
        with django_assert_num_queries(1):
            user = user_for_token(key)
            assert (user.pk, user.username) == (alice.pk, "alice")

    def test_inactive_users_token_is_refused(self, make_user):
        inactive = make_user("gone", is_active=False)
        with pytest.raises(errors.InvalidToken):
            user_for_token(Token.objects.get(user=inactive).key)


class TestUsersForTokens:
    def test_one_query_for_all_each_user_or_its_error_in_order(self, alice, bob, make_user,
                                                               django_assert_num_queries):
        gone = make_user("gone", is_active=False)
        alice_key, bob_key, gone_key = (Token.objects.get(user=user).key for user in (alice, bob, gone))
        tokens = [bob_key, "no-such-token", None, ["a"], gone_key, alice_key, "x" * 129, "a\x00b", bob_key]
        with django_assert_num_queries(1):
            users = services.users_for_tokens(tokens)
        assert [getattr(user, "username", type(user).__name__) for user in users] == [
            "bob", "InvalidToken", "InvalidToken", "InvalidToken", "InvalidToken", "alice", "InvalidToken",
            "InvalidToken", "bob"]
        assert (users[0].pk, users[5].pk) == (bob.pk, alice.pk)

    def test_no_valid_token_no_query(self, db, django_assert_num_queries):
        with django_assert_num_queries(0):
            assert [type(user) for user in services.users_for_tokens(["", 42])] == [errors.InvalidToken] * 2


class TestActiveUser:
    def test_active_user_by_pk(self, alice):
        assert services.active_user(alice.pk) == alice

    def test_inactive_deleted_or_non_int_pk_is_none(self, alice, make_user):
        inactive = make_user("gone", is_active=False)
        assert services.active_user(inactive.pk) is None
        assert services.active_user(alice.pk + 1000) is None
        assert services.active_user(str(alice.pk)) is None
        assert services.active_user(None) is None


class TestParseRoomId:
    def test_hex32_form(self):
        room_uuid = uuid.uuid4()
        assert services.parse_room_id(room_uuid.hex) == room_uuid

    def test_hyphenated_form(self):
        room_uuid = uuid.uuid4()
        assert services.parse_room_id(str(room_uuid)) == room_uuid

    @pytest.mark.parametrize("value", [
        "",
        "abc",
        uuid.uuid4().hex[:31],
        uuid.uuid4().hex + "0",
        "z" * 32,
        "x" * 36,
        "{" + str(uuid.uuid4()) + "}",
        "urn:uuid:" + str(uuid.uuid4()),
    ])
    def test_wrong_length_or_garbage_is_an_invalid_room_id(self, value):
        with pytest.raises(errors.InvalidRoomId):
            services.parse_room_id(value)

    @pytest.mark.parametrize("value", [None, 17, 1.5, ["a"], {"id": "a"}, uuid.uuid4()])
    def test_non_string_is_an_invalid_message_format(self, value):
        with pytest.raises(errors.InvalidMessageFormat):
            services.parse_room_id(value)


class TestMemberRoom:
    def test_member_gets_the_room(self, alice, room):
        assert services.member_room(alice, room.pk.hex) == room
        assert services.member_room(alice, str(room.pk)) == room

    def test_non_member_and_nonexistent_room_answer_alike(self, room, make_user):
        carol = make_user("carol")
        with pytest.raises(errors.InvalidRoomId) as not_member:
            services.member_room(carol, room.pk.hex)
        with pytest.raises(errors.InvalidRoomId) as nonexistent:
            services.member_room(carol, uuid.uuid4().hex)
        assert not_member.value.message == nonexistent.value.message
        assert str(not_member.value) == str(nonexistent.value)

    def test_bad_room_ids_are_refused(self, alice, room):
        with pytest.raises(errors.InvalidRoomId):
            services.member_room(alice, "not-a-room")
        with pytest.raises(errors.InvalidMessageFormat):
            services.member_room(alice, None)


class TestRecentMessages:
    def test_last_20_of_25_oldest_first(self, alice, room):
        created = [ChatMessage.objects.create(user=alice, room=room, text=f"m{n}") for n in range(25)]
        recent = services.recent_messages(room)
        assert [m.pk for m in recent] == [m.pk for m in created[5:]]
        assert [m.text for m in recent] == [f"m{n}" for n in range(5, 25)]

    def test_only_the_rooms_own_messages(self, alice, bob, room, make_room):
        other = make_room(alice, name="other")
        ChatMessage.objects.create(user=alice, room=other, text="elsewhere")
        mine = ChatMessage.objects.create(user=bob, room=room, text="here")
        assert services.recent_messages(room) == [mine]

    def test_empty_room(self, room):
        assert services.recent_messages(room) == []


class TestCleanText:
    def test_text_is_returned(self):
        assert services.clean_text("hello") == "hello"

    @pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n"])
    def test_empty_or_white_space_text(self, text):
        with pytest.raises(errors.EmptyText):
            services.clean_text(text)

    def test_length_limit_follows_the_setting(self, settings):
        settings.CHAT = {**settings.CHAT, "MAX_MESSAGE_LENGTH": 10}
        assert services.clean_text("x" * 10) == "x" * 10
        with pytest.raises(errors.TextTooLong):
            services.clean_text("x" * 11)

    def test_default_limit_is_4000(self):
        assert services.clean_text("x" * 4000) == "x" * 4000
        with pytest.raises(errors.TextTooLong):
            services.clean_text("x" * 4001)

    @pytest.mark.parametrize("text", [None, 5, ["hi"], {"text": "hi"}])
    def test_non_string_text(self, text):
        with pytest.raises(errors.InvalidMessageFormat):
            services.clean_text(text)


class TestPostMessage:
    def test_stores_and_returns_the_message(self, alice, room):
        posted = services.post_message(alice, room.pk.hex, "hi", "uuid-1")
        assert posted.created is True
        stored = ChatMessage.objects.get()
        assert posted.message == stored
        assert (stored.user, stored.room, stored.text, stored.client_uuid) == (alice, room, "hi", "uuid-1")

    def test_retry_with_the_same_uuid_returns_the_first_message(self, alice, room):
        first = services.post_message(alice, room.pk.hex, "hi", "uuid-1")
        retry = services.post_message(alice, room.pk.hex, "hi again", "uuid-1")
        assert retry.created is False
        assert retry.message.pk == first.message.pk
        assert retry.message.text == "hi"
        assert ChatMessage.objects.count() == 1

    def test_same_uuid_from_another_user_is_another_message(self, alice, bob, room):
        from_alice = services.post_message(alice, room.pk.hex, "hi", "uuid-1")
        from_bob = services.post_message(bob, room.pk.hex, "hi", "uuid-1")
        assert from_bob.created is True
        assert from_bob.message.pk != from_alice.message.pk
        assert ChatMessage.objects.count() == 2

    def test_without_uuid_every_call_stores(self, alice, room):
        services.post_message(alice, room.pk.hex, "hi", None)
        services.post_message(alice, room.pk.hex, "hi", None)
        assert ChatMessage.objects.count() == 2

    def test_retry_naming_another_room_still_returns_the_first_message(self, alice, room, make_room):
        other = make_room(alice, name="other")
        first = services.post_message(alice, room.pk.hex, "hi", "uuid-1")
        retry = services.post_message(alice, other.pk.hex, "hi", "uuid-1")
        assert retry.created is False
        assert retry.message.pk == first.message.pk
        assert retry.message.room_id == room.pk
        assert ChatMessage.objects.count() == 1

    @pytest.mark.parametrize("post", [
        lambda user, room, text, client_uuid: services.post_message(user, room.pk.hex, text, client_uuid),
        lambda user, room, text, client_uuid: services.post_message_as(user.pk, room.pk.hex, text, client_uuid),
    ], ids=["post_message", "post_message_as"])
    def test_retries_of_two_users_with_one_uuid_each_get_their_own_message(self, alice, bob, room, post):
        # The lookup of a retry is by sender and uuid: by uuid alone, bob's retry would get alice's.
        from_alice = post(alice, room, "from alice", "uuid-1")
        from_bob = post(bob, room, "from bob", "uuid-1")
        for user, first in ((bob, from_bob), (alice, from_alice)):
            retry = post(user, room, "again", "uuid-1")
            assert retry.created is False
            assert retry.message.pk == first.message.pk
            assert (retry.message.user_id, retry.message.text) == (user.pk, first.message.text)
        assert ChatMessage.objects.count() == 2

    def test_a_retry_naming_a_room_with_other_members_reaches_only_the_stored_rooms(self, alice, bob, carol, room,
                                                                                  make_room):
        other = make_room(alice, carol, name="other")
        first = services.post_message(alice, room.pk.hex, "hi", "uuid-1")
        retry = services.post_message(alice, other.pk.hex, "hi", "uuid-1")
        assert retry.message.pk == first.message.pk
        assert sorted(retry.member_ids) == sorted([alice.pk, bob.pk])

    def test_a_retry_leaves_the_surrounding_transaction_usable(self, alice, room):
        # The duplicate insert fails inside its own savepoint; PostgreSQL would refuse every
        # later query of the transaction otherwise.
        with transaction.atomic():
            services.post_message(alice, room.pk.hex, "hi", "uuid-1")
            services.post_message(alice, room.pk.hex, "hi", "uuid-1")
            services.post_message(alice, room.pk.hex, "next", "uuid-2")
            assert list(ChatMessage.objects.values_list("text", flat=True)) == ["hi", "next"]

    def test_refused_messages_store_nothing(self, alice, room, make_user):
        carol = make_user("carol")
        with pytest.raises(errors.InvalidRoomId):
            services.post_message(carol, room.pk.hex, "hi", "uuid-1")
        with pytest.raises(errors.EmptyText):
            services.post_message(alice, room.pk.hex, "  ", "uuid-2")
        with pytest.raises(errors.InvalidRoomId):
            services.post_message(alice, uuid.uuid4().hex, "hi", "uuid-3")
        assert ChatMessage.objects.count() == 0


class TestPostMessageAs:
    """The worker's new_message: the sender known by id, checked in the members' query."""

    def test_two_statements_store_it_and_the_reply_needs_no_more(self, alice, bob, room):
        with CaptureQueriesContext(connection) as queries:
            posted = services.post_message_as(alice.pk, room.pk.hex, "hi", "uuid-1")
            reply = MessageSerializer(posted.message).data
        run = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"].upper()]
        # The members, the insert (with its change in the feed: one more statement on SQLite).
        assert len(run) == 1 + statements.insert_statements(), run
        assert posted.cursor is not None
        stored = ChatMessage.objects.get()
        assert (stored.user, stored.room, stored.text, stored.client_uuid) == (alice, room, "hi", "uuid-1")
        assert posted.created is True and posted.message == stored
        assert posted.member_ids == sorted([alice.pk, bob.pk])
        assert reply == MessageSerializer(stored).data

    def test_retry_with_the_same_uuid_returns_the_first_message(self, alice, room):
        first = services.post_message_as(alice.pk, room.pk.hex, "hi", "uuid-1")
        retry = services.post_message_as(alice.pk, room.pk.hex, "hi again", "uuid-1")
        assert (retry.created, retry.message.pk, retry.message.text) == (False, first.message.pk, "hi")
        assert ChatMessage.objects.count() == 1

    def test_an_inactive_or_deleted_sender_needs_authentication_before_anything_else(self, alice, bob, room):
        alice.is_active = False
        alice.save()
        for room_id, text in [(room.pk.hex, "hi"), (uuid.uuid4().hex, "hi"), ("bad", "hi"), (room.pk.hex, " ")]:
            with pytest.raises(errors.AuthenticationRequired):
                services.post_message_as(alice.pk, room_id, text, None)
        gone = bob.pk
        bob.delete()
        with pytest.raises(errors.AuthenticationRequired):
            services.post_message_as(gone, room.pk.hex, "hi", None)
        assert ChatMessage.objects.count() == 0

    def test_an_active_user_gets_the_same_errors_as_post_message(self, alice, room, make_user):
        carol = make_user("carol")
        with pytest.raises(errors.InvalidRoomId):
            services.post_message_as(carol.pk, room.pk.hex, "hi", None)
        with pytest.raises(errors.EmptyText):
            services.post_message_as(alice.pk, room.pk.hex, "  ", None)
        with pytest.raises(errors.InvalidMessageFormat):
            services.post_message_as(alice.pk, room.pk.hex, "hi", "x" * 65)
        assert ChatMessage.objects.count() == 0


class TestPostMessagesAs:
    """Messages that came together: the members of all their rooms in one query, one insert."""

    def test_each_outcome_in_order_and_the_accepted_stored_in_one_insert(self, alice, bob, room, make_user):
        carol = make_user("carol")
        posts = [services.Post(alice.pk, room.pk.hex, "one", "a"), services.Post(carol.pk, room.pk.hex, "no", "b"),
                 services.Post(bob.pk, room.pk.hex, "two", "c"), services.Post(bob.pk, room.pk.hex, "", "d")]
        with CaptureQueriesContext(connection) as queries:
            outcomes = services.post_messages_as(posts)
        inserts = [q["sql"] for q in queries.captured_queries if q["sql"].upper().startswith(("INSERT", "WITH"))]
        assert len(inserts) == statements.insert_statements()
        assert [type(outcome).__name__ for outcome in outcomes] == ["PostedMessage", "InvalidRoomId",
                                                                    "PostedMessage", "EmptyText"]
        stored = list(ChatMessage.objects.order_by("id"))
        assert [outcomes[0].message, outcomes[2].message] == stored
        assert [(m.user, m.text, m.client_uuid) for m in stored] == [(alice, "one", "a"), (bob, "two", "c")]

    def test_without_an_insert_that_returns_rows_they_are_stored_one_by_one(self, alice, bob, room, monkeypatch):
        monkeypatch.setattr(statements, "can_insert_messages", lambda connection=None: False)
        posts = [services.Post(user.pk, room.pk.hex, f"text {n}", f"uuid-{n}") for n, user in enumerate([alice, bob])]
        with CaptureQueriesContext(connection) as queries:
            outcomes = services.post_messages_as(posts)
        inserts = [q["sql"] for q in queries.captured_queries if q["sql"].upper().startswith(("INSERT", "WITH"))]
        assert len(inserts) == 2 * statements.insert_statements()
        assert [outcome.message.text for outcome in outcomes] == ["text 0", "text 1"]
        assert list(ChatMessage.objects.order_by("id").values_list("text", flat=True)) == ["text 0", "text 1"]


class TestMemberIds:
    def test_member_pks_in_order(self, alice, bob, make_user, make_room):
        carol = make_user("carol")
        room = make_room(carol, alice, bob)
        assert services.room_member_ids(room.pk) == sorted([alice.pk, bob.pk, carol.pk])

    def test_room_without_members(self, db):
        assert services.room_member_ids(ChatRoom.objects.create(name="empty").pk) == []
