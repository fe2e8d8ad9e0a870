"""The statements on the chat's hot paths, built once and run many times.

A new message is two statements: the room's members (joined with their accounts, so the
sender's state comes in the same round trip) and the insert, which writes the message's change in
the feed too (chat.feed; on SQLite a third statement does, in the same transaction); messages that
a worker answers together share those (the members of all their rooms; one insert of many rows). A
connection's authenticate is one (the token joined with its user), shared in the same way. Built through the ORM on
every call, each cost several times more in Python than in the database (measured with the
worker's profile, docs/performance.md); so the SQL is made once per database backend (and
number of rows), by the ORM (queries) or from the model's metadata (the insert: tables,
columns, quoting), and the cursor runs it with the values adapted by the models' own fields.
"""

from __future__ import annotations

import functools
import uuid
from typing import Collection, NamedTuple, Sequence

from django.contrib.auth import get_user_model
from django.db import connections, router, transaction
from django.utils import timezone

from rest_framework.authtoken.models import Token

from . import feed, reactions, users
from .models import ChatChange, ChatMessage, ChatRoom, Membership

User = get_user_model()


class Member(NamedTuple):
    user_id: int
    is_active: bool
    loaded: tuple  # the user's fields of `user_fields()`, in that order


class Account(NamedTuple):
    user_id: int
    loaded: tuple
    is_active: bool


def user_fields() -> tuple[str, ...]:
    """The user's fields (attnames) the statements load with an account: the login name; or, when
    DISPLAY_NAME names a function (it may read any of them), every concrete field but the id."""
    if users.display_function() is None:
        return (users.LOGIN_ATTNAME,)
    return tuple(field.attname for field in User._meta.concrete_fields if not field.primary_key)


# The columns the insert writes, in this order (insert_message's values too).
_INSERTED = ("user", "room", "date_created", "text", "client_uuid")
# SQL by (statement, backend vendor).
_statements: dict[tuple[str, str], str] = {}


def _connection():
    return connections[router.db_for_write(ChatMessage)]


def _query_sql(name: str, connection, queryset, parameters: int = 1) -> str:
    """The SQL of `queryset()`, with `parameters` parameters (the values it is filtered on), made
    once per backend and name."""
    key = (name, connection.vendor)
    sql = _statements.get(key)
    if sql is None:
        sql, params = queryset().query.sql_with_params()
        if len(params) != parameters:
            raise RuntimeError(f"the {name} query has parameters {params!r}, not {parameters}")
        _statements[key] = sql
    return sql


def _rooms_members_queryset(rooms: int, loaded: tuple[str, ...]):
    # Distinct placeholder values, so that the ORM keeps one parameter per room.
    return Membership.objects.filter(room_id__in=[uuid.UUID(int=n) for n in range(rooms)]).values_list(
        "room_id", "user_id", "user__is_active", *(f"user__{name}" for name in loaded))


def _tokens_queryset(keys: int, loaded: tuple[str, ...]):
    # Distinct placeholder keys, so that the ORM keeps one parameter per key.
    return Token.objects.filter(key__in=[f"-{n}" for n in range(keys)]).values_list(
        "key", "user_id", "user__is_active", *(f"user__{name}" for name in loaded))


def _insert_sql(connection, rows: int = 1) -> str:
    """The insert of `rows` messages, returning each one's id, author and client uuid (which say
    which message a row is), and its change's id, xid and horizon (chat.feed.live_cursor).

    On PostgreSQL one statement writes both the messages and their changes (a data-modifying WITH),
    so a message still costs one statement, in one transaction. Elsewhere it returns the messages
    only, and the changes' insert (chat.feed.insert_sql) follows, in the same transaction."""
    key = (f"insert/{rows}", connection.vendor)
    sql = _statements.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        meta = ChatMessage._meta
        columns = ", ".join(quote(meta.get_field(name).column) for name in _INSERTED)
        values = ", ".join([f"({', '.join(['%s'] * len(_INSERTED))})"] * rows)
        returned = ", ".join(quote(meta.get_field(name).column) for name in ("id", "user", "client_uuid", "room"))
        sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {values} RETURNING {returned}"
        if feed.by_transaction(connection):
            change = ChatChange._meta
            change_columns = ", ".join(quote(change.get_field(name).column)
                                       for name in ("kind", "at", "room", "message", "user", "xid"))
            sql = (f"WITH m AS ({sql}), c AS (INSERT INTO {quote(change.db_table)} ({change_columns}) "
                   f"SELECT %s, %s, m.{quote('room_id')}, m.{quote('id')}, m.{quote('user_id')}, {feed.XID_SQL} "
                   f"FROM m RETURNING {quote('message_id')}, {feed.returning(connection)} AS horizon) "
                   f"SELECT m.{quote('id')}, m.{quote('user_id')}, m.{quote('client_uuid')}, c.{quote('id')}, "
                   f"c.{quote('xid')}, c.horizon FROM m JOIN c ON c.{quote('message_id')} = m.{quote('id')}")
        _statements[key] = sql
    return sql


def token_accounts(keys: Collection[str]) -> dict[str, Account]:
    """The accounts that REST framework tokens belong to (id, name, active), in one query, by
    token; a key that is no token is not in it."""
    connection = connections[router.db_for_read(Token)]
    keys = list(keys)
    loaded = user_fields()
    with connection.cursor() as cursor:
        count = len(keys)
        sql = _query_sql(f"token/{count}/{','.join(loaded)}", connection,
                         lambda: _tokens_queryset(count, loaded), count)
        cursor.execute(sql, keys)
        return {row[0]: Account(row[1], row[3:], bool(row[2])) for row in cursor.fetchall()}


def rooms_members(room_uuids: Collection[uuid.UUID]) -> dict[uuid.UUID, list[Member]]:
    """The members of several rooms with their accounts' state, in one query (no order): every
    given room, with no members when it has none or does not exist."""
    connection = connections[router.db_for_read(Membership)]
    field = Membership._meta.get_field("room")
    # By the value the query was given, which is the one its rows carry (hex text in SQLite).
    by_value = {field.get_db_prep_value(room_uuid, connection): room_uuid for room_uuid in room_uuids}
    members: dict[uuid.UUID, list[Member]] = {room_uuid: [] for room_uuid in by_value.values()}
    loaded = user_fields()
    with connection.cursor() as cursor:
        rooms = len(by_value)
        sql = _query_sql(f"members/{rooms}/{','.join(loaded)}", connection,
                         lambda: _rooms_members_queryset(rooms, loaded), rooms)
        cursor.execute(sql, list(by_value))
        for row in cursor.fetchall():
            members[by_value[row[0]]].append(Member(row[1], bool(row[2]), row[3:]))
    return members


def insert_statements(connection=None) -> int:
    """How many statements `insert_messages` runs: one on PostgreSQL, which writes the feed's rows
    in the same statement; two elsewhere (the messages, then their changes)."""
    return 1 if feed.by_transaction(connection or _connection()) else 2


def can_insert_messages(connection=None) -> bool:
    """Whether `insert_messages` can run on the database (it needs an insert that returns rows)."""
    return (connection or _connection()).features.can_return_rows_from_bulk_insert


class NewMessage(NamedTuple):
    author: object  # a user instance (see `user`)
    room_uuid: uuid.UUID
    text: str
    client_uuid: str | None


class Inserted(NamedTuple):
    message: ChatMessage
    cursor: str  # for the live reply (chat.feed.live_cursor)


def insert_messages(new: Sequence[NewMessage], kind: ChatChange.Kind = ChatChange.Kind.NEW_MESSAGE) -> list[Inserted]:
    """Insert messages and their changes in the feed, in one transaction (on PostgreSQL one
    statement), in this order; returns each one's saved instance, its author attached, and cursor.

    Raises IntegrityError, and stores none of them, if one of them (a retry: same author and
    client uuid) is stored already, or two of them are the same; so that a failed insert leaves the
    caller's transaction usable, run it inside a savepoint when the caller is in a transaction.
    """
    connection = _connection()
    created = timezone.now()
    at = _prepared_time(created, connection)
    values: list = []
    for message in new:
        values += _prepared_row(connection, message.author, message.room_uuid, at, message.text, message.client_uuid)
    with connection.cursor() as cursor:
        if feed.by_transaction(connection):
            cursor.execute(_insert_sql(connection, len(new)), [*values, kind.value, at])
            rows = cursor.fetchall()
        else:
            with transaction.atomic(using=connection.alias):
                cursor.execute(_insert_sql(connection, len(new)), values)
                messages = cursor.fetchall()
                changes: list = []
                for message_id, user_id, _, room_id in messages:
                    changes += [kind.value, room_id, message_id, user_id, at, None]
                cursor.execute(feed.insert_sql(connection, len(messages)), changes)
                cursors = {message_id: (change_id, xid, horizon) for message_id, change_id, xid, horizon
                           in cursor.fetchall()}
            rows = [(message_id, user_id, client_uuid, *cursors[message_id])
                    for message_id, user_id, client_uuid, _ in messages]
    # The author and client uuid say which message a row is: a uuid is unique to its author, and
    # a message without one comes alone.
    stored = {(user_id, client_uuid): (message_id, feed.live_cursor(connection, change_id, xid, horizon))
              for message_id, user_id, client_uuid, change_id, xid, horizon in rows}
    inserted = []
    for message in new:
        message_id, cursor = stored[(message.author.pk, message.client_uuid)]
        inserted.append(Inserted(_stored(connection, message_id, message.author, message.room_uuid, created,
                                         message.text, message.client_uuid), cursor))
    return inserted


def insert_message(author, room_uuid: uuid.UUID, text: str, client_uuid: str | None,
                   kind: ChatChange.Kind = ChatChange.Kind.NEW_MESSAGE) -> Inserted:
    """Insert one message and its change (insert_messages for one; its client uuid may be None)."""
    [inserted] = insert_messages([NewMessage(author, room_uuid, text, client_uuid)], kind)
    return inserted


def _prepared_time(created, connection):
    return ChatMessage._meta.get_field("date_created").get_db_prep_save(created, connection)


def _prepared_row(connection, author, room_uuid: uuid.UUID, at, text: str, client_uuid: str | None) -> list:
    """One message's values for the insert, in `_INSERTED`'s order: the ids in the backend's form (a
    UUID is 32 hex digits in SQLite), `at` prepared already (`_prepared_time`), the strings as they are."""
    meta = ChatMessage._meta
    return [meta.get_field("user").get_db_prep_save(author.pk, connection),
            meta.get_field("room").get_db_prep_save(room_uuid, connection), at, text, client_uuid]


def _stored(connection, message_id: int, author, room_uuid: uuid.UUID, created, text: str,
            client_uuid: str | None) -> ChatMessage:
    """A message just inserted, as a saved instance with its author attached."""
    meta = ChatMessage._meta
    row = {meta.pk.attname: message_id, "user_id": author.pk, "room_id": room_uuid, "date_created": created,
           "text": text, "client_uuid": client_uuid, "edited_at": None, "deleted": False}
    message = ChatMessage.from_db(connection.alias, list(row), [row[field.attname] for field in meta.concrete_fields])
    ChatMessage.user.field.set_cached_value(message, author)
    reactions.attach(message, [])
    return message


def user(user_id: int, loaded: tuple):
    """An active user as an instance holding what a reply needs (id, the fields of `user_fields()`,
    as an Account or Member carries them); the rest deferred (read from the database if asked for)."""
    names = user_fields()
    values = {User._meta.pk.attname: user_id, **dict(zip(names, loaded)), "is_active": True}
    fields = _instance_fields(names)
    return User.from_db(router.db_for_read(User), fields, [values[name] for name in fields])


@functools.lru_cache(maxsize=8)
def _instance_fields(loaded: tuple[str, ...]) -> list[str]:
    """The model's order of the fields `user` sets: the id, `loaded`, is_active (worked out once)."""
    wanted = {User._meta.pk.attname, *loaded, "is_active"}
    return [field.attname for field in User._meta.concrete_fields if field.attname in wanted]


def room(room_uuid: uuid.UUID) -> ChatRoom:
    """A room as an instance holding its id alone, the rest deferred (read from the database if
    something asks for it): what the permission policy gets where no row of the room was read."""
    return ChatRoom.from_db(router.db_for_read(ChatRoom), [ChatRoom._meta.pk.attname], [room_uuid])
