"""Messages that change after they are sent: edits, deletions (a tombstone) and reactions. Shared
by the bus workers and the REST API.

Each runs in one transaction that locks the message's row, so that two changes of one message
apply one after the other, and costs the same few queries whatever the room's size or history:
the message (with the user's membership), whether the request was done already (a retry, by its
uuid), the change itself, its row in the feed (chat.feed), the message's reactions and the room's
members for the reply. A request that changes nothing (a retry, the same text, a reaction that is
there already) stores nothing and is still a success, with the message as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import errors, feed, fields, reactions, signals
from .models import ChatChange, ChatMessage, ChatReaction
from .services import room_member_ids

Kind = ChatChange.Kind


@dataclass(frozen=True)
class ChangedMessage:
    message: ChatMessage  # as stored now, its reactions attached
    # The members of the message's room: who hears about it.
    member_ids: list[int]
    # The feed's cursor for the live reply; None when nothing changed.
    cursor: str | None


def _locked(user: Any, message_id: int) -> ChatMessage:
    """The message, its row locked to the end of the transaction, if it is in a room of the user's;
    one the user may not see is refused exactly like one that does not exist."""
    message = (ChatMessage.objects.select_for_update(of=("self",)).select_related("user")
               .filter(pk=message_id, room__users=user).first())
    if message is None:
        raise errors.InvalidMessageId()
    return message


def _authored(user: Any, message: ChatMessage, what: str) -> None:
    if message.user_id != user.pk:
        raise errors.Forbidden(f"Only its author may {what} a message")


def _changed(user: Any, message: ChatMessage, kind: Kind, cursor: str | None) -> ChangedMessage:
    """The outcome, and the `message_changed` signal when a change was stored."""
    changed = ChangedMessage(message, room_member_ids(message.room_id), cursor)
    if cursor is not None:
        signals.send_on_commit(signals.message_changed, ChatMessage, message=message, action=kind.label, user=user,
                               member_ids=changed.member_ids)
    return changed


def edit_message(user: Any, message_id: Any, text: Any, client_uuid: Any) -> ChangedMessage:
    """Replace the text of the user's own message."""
    wanted = fields.required_message_id(message_id, "message")
    clean = fields.text(text)
    client_uuid = fields.client_uuid(client_uuid)
    with transaction.atomic():
        message = _locked(user, wanted)
        _authored(user, message, "edit")
        if message.deleted:
            raise errors.MessageDeleted()
        cursor = None
        if message.text != clean and not feed.done_by(user.pk, client_uuid):
            message.text, message.edited_at = clean, timezone.now()
            message.save(update_fields=["text", "edited_at"])
            cursor = feed.record(Kind.EDIT_MESSAGE, message.room_id, user.pk, message.pk, client_uuid,
                                 message.edited_at)
        reactions.load([message])
    return _changed(user, message, Kind.EDIT_MESSAGE, cursor)


def delete_message(user: Any, message_id: Any, client_uuid: Any) -> ChangedMessage:
    """Erase the user's own message: its text and its reactions go, its row stays as a tombstone."""
    wanted = fields.required_message_id(message_id, "message")
    client_uuid = fields.client_uuid(client_uuid)
    with transaction.atomic():
        message = _locked(user, wanted)
        _authored(user, message, "delete")
        cursor = None
        if not message.deleted and not feed.done_by(user.pk, client_uuid):
            ChatReaction.objects.filter(message=message).delete()
            message.text, message.deleted = "", True
            message.save(update_fields=["text", "deleted"])
            cursor = feed.record(Kind.DELETE_MESSAGE, message.room_id, user.pk, message.pk, client_uuid)
        reactions.attach(message, [])
    return _changed(user, message, Kind.DELETE_MESSAGE, cursor)


def add_reaction(user: Any, message_id: Any, emoji: Any, client_uuid: Any) -> ChangedMessage:
    return _react(user, message_id, emoji, client_uuid, add=True)


def remove_reaction(user: Any, message_id: Any, emoji: Any, client_uuid: Any) -> ChangedMessage:
    return _react(user, message_id, emoji, client_uuid, add=False)


def _react(user: Any, message_id: Any, emoji: Any, client_uuid: Any, add: bool) -> ChangedMessage:
    """Add (remove) the user's reaction with `emoji` to a message of a room of theirs; one
    that is there (not there) already is left as it is."""
    wanted = fields.required_message_id(message_id, "message")
    chosen = fields.emoji(emoji)
    client_uuid = fields.client_uuid(client_uuid)
    with transaction.atomic():
        message = _locked(user, wanted)
        if message.deleted:
            raise errors.MessageDeleted()
        cursor = None
        if not feed.done_by(user.pk, client_uuid):
            # The message's row is locked: no other request of this message runs between the two.
            mine = ChatReaction.objects.filter(message=message, user=user, emoji=chosen)
            if add and not mine.exists():
                ChatReaction.objects.create(message=message, user=user, emoji=chosen)
                cursor = feed.record(Kind.ADD_REACTION, message.room_id, user.pk, message.pk, client_uuid)
            elif not add and mine.delete()[0]:
                cursor = feed.record(Kind.REMOVE_REACTION, message.room_id, user.pk, message.pk, client_uuid)
        reactions.load([message])
    return _changed(user, message, Kind.ADD_REACTION if add else Kind.REMOVE_REACTION, cursor)
