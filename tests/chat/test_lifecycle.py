"""`chat.lifecycle`: edits, deletions (tombstones) and reactions, their rules, retries and costs."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import errors, lifecycle, services
from chat.models import ChatChange, ChatMessage, ChatReaction, Membership

Kind = ChatChange.Kind


def post(user, room, text: str = "hello", uuid: str | None = None) -> ChatMessage:
    return services.post_message(user, room.pk.hex, text, uuid).message


def stored(message: ChatMessage) -> ChatMessage:
    return ChatMessage.objects.get(pk=message.pk)


class TestEdit:
    def test_the_author_edits_and_every_member_hears_with_a_cursor(self, alice, bob, room):
        message = post(alice, room)
        changed = lifecycle.edit_message(alice, message.pk, "hello, world", "e-1")
        assert changed.message.text == stored(message).text == "hello, world"
        assert changed.message.edited_at is not None and stored(message).edited_at == changed.message.edited_at
        assert changed.member_ids == sorted([alice.pk, bob.pk])
        assert isinstance(changed.cursor, str)
        assert ChatChange.objects.filter(kind=Kind.EDIT_MESSAGE, message=message, client_uuid="e-1").count() == 1

    def test_another_members_message_is_forbidden(self, alice, bob, room):
        message = post(alice, room)
        with pytest.raises(errors.Forbidden):
            lifecycle.edit_message(bob, message.pk, "mine now", None)
        assert stored(message).text == "hello"

    @pytest.mark.parametrize("outsider", ["non_member", "no_such_message"])
    def test_a_message_the_user_cannot_see_is_answered_as_one_that_does_not_exist(self, alice, carol, room, outsider):
        message = post(alice, room)
        user, message_id = (carol, message.pk) if outsider == "non_member" else (alice, message.pk + 1000)
        with pytest.raises(errors.InvalidMessageId):
            lifecycle.edit_message(user, message_id, "x", None)

    def test_the_same_text_changes_nothing_and_stores_no_change(self, alice, room):
        message = post(alice, room)
        changed = lifecycle.edit_message(alice, message.pk, "hello", "e-1")
        assert changed.cursor is None and changed.message.edited_at is None
        assert not ChatChange.objects.filter(kind=Kind.EDIT_MESSAGE).exists()

    def test_a_retry_with_the_same_uuid_is_not_made_again_after_a_later_edit(self, alice, room):
        message = post(alice, room)
        lifecycle.edit_message(alice, message.pk, "first", "e-1")
        lifecycle.edit_message(alice, message.pk, "second", "e-2")
        retried = lifecycle.edit_message(alice, message.pk, "first", "e-1")
        assert retried.cursor is None and retried.message.text == stored(message).text == "second"

    @pytest.mark.parametrize("text, code", [("", "empty_text"), ("   ", "empty_text"), ("x" * 4001, "text_too_long"),
                                            (5, "invalid_message_format")])
    def test_text_is_checked_as_a_new_messages(self, alice, room, text, code):
        message = post(alice, room)
        with pytest.raises(errors.ChatError) as raised:
            lifecycle.edit_message(alice, message.pk, text, None)
        assert raised.value.code == code

    @pytest.mark.parametrize("message_id", [None, "1", -1, True, 1.5])
    def test_a_message_id_that_is_no_id_is_a_format_error(self, alice, room, message_id):
        with pytest.raises(errors.InvalidMessageFormat):
            lifecycle.edit_message(alice, message_id, "x", None)

    def test_a_deleted_message_is_not_edited(self, alice, room):
        message = post(alice, room)
        lifecycle.delete_message(alice, message.pk, None)
        with pytest.raises(errors.MessageDeleted):
            lifecycle.edit_message(alice, message.pk, "back", None)


class TestDelete:
    def test_the_text_and_reactions_are_erased_and_the_row_stays(self, alice, bob, room):
        message = post(alice, room, "a secret")
        lifecycle.add_reaction(bob, message.pk, "👍", None)
        changed = lifecycle.delete_message(alice, message.pk, "d-1")
        row = stored(message)
        assert (row.deleted, row.text) == (True, "")
        assert not ChatReaction.objects.filter(message_id=message.pk).exists()
        assert changed.message.deleted and changed.message.text == "" and isinstance(changed.cursor, str)
        # Nothing in the message table still holds the text.
        assert not ChatMessage.objects.filter(text__contains="secret").exists()

    def test_only_the_author_deletes(self, alice, bob, room):
        message = post(alice, room)
        with pytest.raises(errors.Forbidden):
            lifecycle.delete_message(bob, message.pk, None)
        assert not stored(message).deleted

    def test_deleting_a_deleted_message_is_a_success_that_stores_nothing(self, alice, room):
        message = post(alice, room)
        lifecycle.delete_message(alice, message.pk, "d-1")
        again = lifecycle.delete_message(alice, message.pk, "d-2")
        assert again.cursor is None and again.message.deleted
        assert ChatChange.objects.filter(kind=Kind.DELETE_MESSAGE).count() == 1

    def test_a_new_message_retried_after_its_deletion_finds_the_tombstone(self, alice, room):
        message = post(alice, room, "hello", "n-1")
        lifecycle.delete_message(alice, message.pk, None)
        retried = services.post_message(alice, room.pk.hex, "hello", "n-1")
        assert not retried.created and retried.message.pk == message.pk and retried.message.deleted


class TestReactions:
    def test_one_entry_per_emoji_in_first_added_order_and_users_in_reacting_order(self, alice, bob, carol, make_room):
        room = make_room(alice, bob, carol)
        message = post(alice, room)
        lifecycle.add_reaction(bob, message.pk, "👍", None)
        lifecycle.add_reaction(carol, message.pk, "🎉", None)
        changed = lifecycle.add_reaction(alice, message.pk, "👍", None)
        assert changed.message.text == "hello"
        from chat.serializers import message_data
        assert message_data(changed.message)["reactions"] == [
            {"emoji": "👍", "users": ["bob", "alice"]}, {"emoji": "🎉", "users": ["carol"]}]

    def test_adding_one_that_is_there_and_removing_one_that_is_not_succeed_and_store_nothing(self, alice, bob, room):
        message = post(alice, room)
        assert lifecycle.add_reaction(bob, message.pk, "👍", None).cursor is not None
        assert lifecycle.add_reaction(bob, message.pk, "👍", None).cursor is None
        assert lifecycle.remove_reaction(bob, message.pk, "👍", None).cursor is not None
        assert lifecycle.remove_reaction(bob, message.pk, "👍", None).cursor is None
        assert list(ChatChange.objects.filter(message=message).exclude(kind=Kind.NEW_MESSAGE)
                    .values_list("kind", flat=True)) == [Kind.ADD_REACTION, Kind.REMOVE_REACTION]
        assert not ChatReaction.objects.exists()

    def test_a_retried_add_after_a_remove_is_not_made_again(self, alice, bob, room):
        message = post(alice, room)
        lifecycle.add_reaction(bob, message.pk, "👍", "r-1")
        lifecycle.remove_reaction(bob, message.pk, "👍", "r-2")
        assert lifecycle.add_reaction(bob, message.pk, "👍", "r-1").cursor is None
        assert not ChatReaction.objects.exists()

    @pytest.mark.parametrize("emoji", ["", " ", "\t\n", "x" * 33])
    def test_an_emoji_of_no_or_too_many_characters_or_only_white_space_is_invalid(self, alice, room, emoji):
        message = post(alice, room)
        with pytest.raises(errors.InvalidEmoji):
            lifecycle.add_reaction(alice, message.pk, emoji, None)

    @pytest.mark.parametrize("emoji", ["👍", "x" * 32, "<b>x</b>", "👨‍👩‍👧", ":+1:"])
    def test_any_string_of_1_to_32_characters_is_an_emoji(self, alice, room, emoji):
        message = post(alice, room)
        changed = lifecycle.add_reaction(alice, message.pk, emoji, None)
        assert [entry["emoji"] for entry in changed.message._chat_reactions] == [emoji]

    @pytest.mark.parametrize("emoji", [None, 5, ["👍"]])
    def test_an_emoji_that_is_no_string_is_a_format_error(self, alice, room, emoji):
        message = post(alice, room)
        with pytest.raises(errors.InvalidMessageFormat):
            lifecycle.add_reaction(alice, message.pk, emoji, None)

    @pytest.mark.parametrize("change", [lifecycle.add_reaction, lifecycle.remove_reaction])
    def test_reacting_to_a_deleted_message_is_refused(self, alice, bob, room, change):
        message = post(alice, room)
        lifecycle.delete_message(alice, message.pk, None)
        with pytest.raises(errors.MessageDeleted):
            change(bob, message.pk, "👍", None)

    def test_a_non_member_cannot_react(self, alice, carol, room):
        message = post(alice, room)
        with pytest.raises(errors.InvalidMessageId):
            lifecycle.add_reaction(carol, message.pk, "👍", None)


class TestCost:
    """An edit, a deletion, a reaction: the same queries for a room of 2 with one message as for a
    room of 200 members with 300 messages and reactions."""

    def big_room(self, alice, make_user, make_room):
        others = [make_user(f"user{n}") for n in range(199)]
        room = make_room(alice, *others)
        ChatMessage.objects.bulk_create([ChatMessage(room=room, user=others[n % 199], text=f"m{n}") for n in range(300)])
        message = post(alice, room)
        ChatReaction.objects.bulk_create([ChatReaction(message=message, user=user, emoji="👍") for user in others[:50]])
        return room, message

    def costs(self, alice, message) -> list[int]:
        counted = []
        uuid = f"c-{message.pk}"
        for change in (lambda: lifecycle.edit_message(alice, message.pk, "edited", f"{uuid}-1"),
                       lambda: lifecycle.add_reaction(alice, message.pk, "🎉", f"{uuid}-2"),
                       lambda: lifecycle.remove_reaction(alice, message.pk, "🎉", f"{uuid}-3"),
                       lambda: lifecycle.delete_message(alice, message.pk, f"{uuid}-4")):
            with CaptureQueriesContext(connection) as queries:
                change()
            counted.append(len(queries))
        return counted

    def test_the_same_queries_whatever_the_rooms_size_or_history(self, alice, bob, room, make_user, make_room):
        small = self.costs(alice, post(alice, room))
        _, message = self.big_room(alice, make_user, make_room)
        assert self.costs(alice, message) == small
        assert max(small) <= 10, small
