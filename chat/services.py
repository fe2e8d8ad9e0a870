"""The chat's operations on its models, shared by the bus workers and the REST API.

Every function raises a `chat.errors.ChatError` with the protocol's code for a request it refuses.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError, transaction

from . import errors, fields, policy, reactions, signals, statements, tickets, users
from .models import ChatChange, ChatMessage, ChatRoom, Membership

User = get_user_model()
logger = logging.getLogger(__name__)
T = TypeVar("T")

# How many messages select_room returns (the protocol's "last 20").
RECENT_MESSAGES = 20


def users_for_credentials(frames: Sequence[Any]) -> list[User | errors.ChatError]:
    """The user each `authenticate` frame names, or InvalidToken, in order: by its `ticket`
    (chat.tickets) when it has one, else by its `token`. One query for all the tokens, two for all
    the tickets."""
    by_ticket = [index for index, frame in enumerate(frames) if "ticket" in frame]
    by_token = [index for index, frame in enumerate(frames) if "ticket" not in frame]
    users: list[User | errors.ChatError] = [errors.InvalidToken()] * len(frames)
    if by_ticket:
        for index, user in zip(by_ticket, tickets.users_for_tickets([frames[i]["ticket"] for i in by_ticket])):
            users[index] = user
    if by_token:
        for index, user in zip(by_token, users_for_tokens([frames[i].get("token") for i in by_token])):
            users[index] = user
    return users


def users_for_tokens(tokens: Sequence[Any]) -> list[User | errors.ChatError]:
    """The active user each REST framework token belongs to, or InvalidToken, in order; one query
    for all of them."""
    valid = {token for token in tokens if isinstance(token, str) and token and len(token) <= 128
             and fields.storable(token)}
    accounts = statements.token_accounts(valid) if valid else {}
    users: list[User | errors.ChatError] = []
    for token in tokens:
        account = accounts.get(token) if isinstance(token, str) else None
        if account is None or not account.is_active:
            users.append(errors.InvalidToken())
        else:
            users.append(statements.user(account.user_id, account.loaded))
    return users


def is_user_pk(user_pk: Any) -> bool:
    # Not a bool: True == 1 would be the session of user 1.
    return isinstance(user_pk, int) and not isinstance(user_pk, bool)


def active_user(user_pk: Any) -> User | None:
    if not is_user_pk(user_pk):
        return None
    return User.objects.filter(pk=user_pk, is_active=True).first()


# The parsers under the names the rest of the code knows them by.
parse_room_id = fields.room_id
clean_text = fields.text


def member_room(user: User, room_id: Any) -> ChatRoom:
    """The room, if `user` is a member; a non-member gets the same error as for no such room."""
    room_uuid = parse_room_id(room_id)
    room = ChatRoom.objects.filter(pk=room_uuid, users=user).first()
    if room is None:
        raise errors.InvalidRoomId()
    return room


def recent_messages(room: ChatRoom, count: int = RECENT_MESSAGES) -> list[ChatMessage]:
    """The room's last `count` messages, oldest first."""
    newest_first = list(room.messages.select_related("user").order_by("-id")[:count])
    newest_first.reverse()
    reactions.load(newest_first)
    return newest_first


def room_member_ids(room_uuid: uuid.UUID) -> list[int]:
    """The ids of a room's members, in one query on the membership table."""
    memberships = Membership.objects.filter(room_id=room_uuid)
    return list(memberships.order_by("user_id").values_list("user_id", flat=True))


def members_of(user: User, room_id: Any) -> dict[int, str]:
    """The names (on the wire) of a room's members by user id, if `user` is one of them (one query)."""
    room_uuid = parse_room_id(room_id)
    members = {user_id: name for _, user_id, name in users.names_of(Membership.objects.filter(room_id=room_uuid))}
    if user.pk not in members:
        raise errors.InvalidRoomId()
    return members


@dataclass(frozen=True)
class PostedMessage:
    message: ChatMessage
    created: bool
    # The members of the message's room: who hears about it.
    member_ids: list[int]
    # The change feed's cursor for the live reply (chat.feed); None for a retry, which stored nothing.
    cursor: str | None = None


def post_message(user: User, room_id: Any, text: Any, client_uuid: str | None) -> PostedMessage:
    """Store a message in a room the user is a member of, once per (user, client uuid).

    A retry with the same client uuid returns the message stored the first time. The insert
    comes first and the unique constraint catches the retry, so a first try (the common case)
    costs one query for the members and one insert.
    """
    room_uuid = parse_room_id(room_id)
    client_uuid = fields.client_uuid(client_uuid)
    members = room_member_ids(room_uuid)
    if user.pk not in members:
        raise errors.InvalidRoomId()
    clean = clean_text(text)
    policy.require(policy.current().can_post(user, statements.room(room_uuid)))
    return store_message(user, room_uuid, members, clean, client_uuid)


@dataclass(frozen=True)
class Post:
    """A message a session that knows its user by id only asks to store (a worker's new_message)."""

    user_pk: int
    room_id: Any
    text: Any
    client_uuid: Any


def post_message_as(user_pk: int, room_id: Any, text: Any, client_uuid: str | None) -> PostedMessage:
    """post_message for a session that knows its user by id only (a worker's request).

    The sender's account comes in the same query as the room's members, so a message costs two
    statements, not three; only a refused request reads the account again, to answer
    `authentication_required` (an inactive or deleted user) before any other error, as
    post_message's callers do.
    """
    [outcome] = post_messages_as([Post(user_pk, room_id, text, client_uuid)])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def post_messages_as(posts: Sequence[Post]) -> list[PostedMessage | Exception]:
    """post_message_as for messages that came together: each checked and stored as if it had come
    alone, its outcome (the message stored, or why not: a ChatError, or a database error) in order.

    Two statements for all of them: the members of every room they name, and one insert of the
    accepted ones, in order (one transaction, so one commit, in autocommit). If that insert fails
    (a retry among them, or the same one twice) it stored nothing, and each is stored alone.
    """
    outcomes: list[PostedMessage | Exception | None] = [None] * len(posts)
    checked: list[tuple[int, uuid.UUID, str | None]] = []
    for index, post in enumerate(posts):
        try:
            checked.append((index, parse_room_id(post.room_id), fields.client_uuid(post.client_uuid)))
        except errors.ChatError as exc:
            outcomes[index] = exc
    members = statements.rooms_members({room_uuid for _, room_uuid, _ in checked}) if checked else {}
    # The policy gets the objects at hand: the sender as the members' query read it, each room by
    # its id alone (one instance a room, so a field a policy reads is read once a room); built only
    # for a policy that decides posting (the default allows all).
    decide = policy.current()
    rooms = {room_uuid: statements.room(room_uuid) for room_uuid in members} \
        if policy.decides(decide, "can_post") else None
    accepted: list[tuple[int, statements.NewMessage, list[int]]] = []
    for index, room_uuid, client_uuid in checked:
        post, in_room = posts[index], members[room_uuid]
        sender = next((member for member in in_room if member.user_id == post.user_pk and member.is_active), None)
        try:
            if sender is None:
                raise errors.InvalidRoomId()
            text = clean_text(post.text)
            author = statements.user(sender.user_id, sender.loaded)
            if rooms is not None:
                policy.require(decide.can_post(author, rooms[room_uuid]))
        except errors.ChatError as exc:
            outcomes[index] = exc
            continue
        accepted.append((index, statements.NewMessage(author, room_uuid, text, client_uuid),
                         sorted(member.user_id for member in in_room)))
    for index, outcome in enumerate(outcomes):
        # A policy's refusal came after the members' query found the sender's account active.
        if isinstance(outcome, errors.ChatError) and not isinstance(outcome, errors.Forbidden) \
                and active_user(posts[index].user_pk) is None:
            outcomes[index] = errors.AuthenticationRequired()
    for (index, _, member_ids), inserted in zip(accepted, _insert_together([new for _, new, _ in accepted])):
        outcomes[index] = _stored(PostedMessage(inserted.message, created=True, member_ids=member_ids,
                                                cursor=inserted.cursor))
    for index, new, member_ids in accepted:
        if outcomes[index] is not None:
            continue
        try:
            outcomes[index] = store_message(new.author, new.room_uuid, member_ids, new.text, new.client_uuid)
        except DatabaseError as exc:
            outcomes[index] = exc
    return outcomes


def _insert_together(new: list[statements.NewMessage]) -> list[statements.Inserted]:
    """The messages inserted in one statement, or none (empty) when they are to be stored one by one:
    fewer than two, a backend that cannot, one without a client uuid, or the insert failed."""
    if len(new) < 2 or not statements.can_insert_messages() or any(one.client_uuid is None for one in new):
        return []
    try:
        return _atomically(statements.insert_messages, new)
    except IntegrityError as exc:
        logger.debug("%d messages stored one by one: %s", len(new), exc)
        return []


def _atomically(insert: Callable[..., T], *args: Any) -> T:
    """Run one insert; in a savepoint when the caller is in a transaction, so that a failed insert
    (a retry's) leaves the caller's transaction usable. In autocommit, the statement is its own."""
    if transaction.get_connection().in_atomic_block:
        with transaction.atomic():
            return insert(*args)
    return insert(*args)


def store_message(user: User, room_uuid: uuid.UUID, members: list[int], text: str, client_uuid: str | None,
                  kind: ChatChange.Kind = ChatChange.Kind.NEW_MESSAGE) -> PostedMessage:
    """Insert a checked message (its change in the feed `kind`); a retry (same user and client
    uuid) gets the stored one back."""
    try:
        inserted = _atomically(statements.insert_message, user, room_uuid, text, client_uuid, kind)
    except IntegrityError:
        # A retry: this user already stored a message with this uuid (maybe through another worker).
        existing = _message_by_client_uuid(user, client_uuid) if client_uuid is not None else None
        if existing is None:
            raise
        if existing.room_id != room_uuid:
            members = room_member_ids(existing.room_id)
        return PostedMessage(existing, created=False, member_ids=members)
    return _stored(PostedMessage(inserted.message, created=True, member_ids=members, cursor=inserted.cursor))


def _stored(posted: PostedMessage) -> PostedMessage:
    """A message just inserted: tell the `message_posted` receivers once it is committed."""
    signals.send_on_commit(signals.message_posted, ChatMessage, message=posted.message,
                           room_id=posted.message.room_id, member_ids=posted.member_ids)
    return posted


def _message_by_client_uuid(user: User, client_uuid: str) -> ChatMessage | None:
    found = ChatMessage.objects.select_related("user").filter(user=user, client_uuid=client_uuid).first()
    if found is not None:
        reactions.load([found])
    return found
