"""The statements on the chat's hot paths, built once and run many times.

A new message is two statements: the room's members (joined with their accounts, so the
sender's state comes in the same round trip) and the insert; a connection's authenticate is one
(the token joined with its user). Built through the ORM on every call, each cost several times
more in Python than in the database (measured with the worker's profile, docs/performance.md);
so the SQL is made once per database backend, by the ORM (queries) or from the model's metadata
(the insert: tables, columns, quoting), and the cursor runs it with the values adapted by the
models' own fields.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.utils import timezone

from rest_framework.authtoken.models import Token

from .models import ChatMessage, Membership

User = get_user_model()


class Member(NamedTuple):
    user_id: int
    is_active: bool
    username: str


class Account(NamedTuple):
    user_id: int
    username: str
    is_active: bool


# The columns the insert writes, in this order (insert_message's values too).
_INSERTED = ("user", "room", "date_created", "text", "client_uuid")
# SQL by (statement, backend vendor).
_statements: dict[tuple[str, str], str] = {}


def _connection():
    return connections[router.db_for_write(ChatMessage)]


def _query_sql(name: str, connection, queryset) -> str:
    """The SQL of a queryset with exactly one parameter (the value it is filtered on), made once."""
    sql = _statements.get((name, connection.vendor))
    if sql is None:
        sql, params = queryset().query.sql_with_params()
        if len(params) != 1:
            raise RuntimeError(f"the {name} query has parameters {params!r}, not one")
        _statements[(name, connection.vendor)] = sql
    return sql


def _members_queryset():
    return Membership.objects.filter(room_id=uuid.UUID(int=0)).values_list(
        "user_id", "user__is_active", "user__username")


def _token_queryset():
    return Token.objects.filter(key="-").values_list("user_id", "user__username", "user__is_active")


def _insert_sql(connection) -> str:
    sql = _statements.get(("insert", connection.vendor))
    if sql is None:
        quote = connection.ops.quote_name
        meta = ChatMessage._meta
        columns = ", ".join(quote(meta.get_field(name).column) for name in _INSERTED)
        sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(_INSERTED))})"
        if connection.features.can_return_columns_from_insert:
            sql += f" RETURNING {quote(meta.pk.column)}"
        _statements[("insert", connection.vendor)] = sql
    return sql


def token_account(key: str) -> Account | None:
    """The account a REST framework token belongs to (id, name, active), in one query."""
    connection = connections[router.db_for_read(Token)]
    with connection.cursor() as cursor:
        cursor.execute(_query_sql("token", connection, _token_queryset), [key])
        row = cursor.fetchone()
    return None if row is None else Account(row[0], row[1], bool(row[2]))


def room_members(room_uuid: uuid.UUID) -> list[Member]:
    """Every member of the room with their account's state, in one query (no order)."""
    connection = connections[router.db_for_read(Membership)]
    room_value = Membership._meta.get_field("room").get_db_prep_value(room_uuid, connection)
    with connection.cursor() as cursor:
        cursor.execute(_query_sql("members", connection, _members_queryset), [room_value])
        return [Member(user_id, bool(active), username) for user_id, active, username in cursor.fetchall()]


def insert_message(author, room_uuid: uuid.UUID, text: str, client_uuid: str | None) -> ChatMessage:
    """Insert one message and return it as a saved instance, its author attached.

    Raises IntegrityError for a (user, client uuid) already stored. Run inside a transaction or
    savepoint when the caller is in one (a failed statement must not spoil it, on PostgreSQL).
    """
    connection = _connection()
    insert_sql = _insert_sql(connection)
    meta = ChatMessage._meta
    created = timezone.now()
    # The ids and the time in the backend's form (a UUID is 32 hex digits in SQLite, a time text);
    # the two strings go as they are.
    prepared = [meta.get_field("user").get_db_prep_save(author.pk, connection),
                meta.get_field("room").get_db_prep_save(room_uuid, connection),
                meta.get_field("date_created").get_db_prep_save(created, connection), text, client_uuid]
    with connection.cursor() as cursor:
        cursor.execute(insert_sql, prepared)
        message_id = cursor.fetchone()[0] if connection.features.can_return_columns_from_insert else cursor.lastrowid
    row = {meta.pk.attname: message_id, "user_id": author.pk, "room_id": room_uuid, "date_created": created,
           "text": text, "client_uuid": client_uuid}
    message = ChatMessage.from_db(connection.alias, list(row), [row[field.attname] for field in meta.concrete_fields])
    ChatMessage.user.field.set_cached_value(message, author)
    return message


def user(user_id: int, username: str):
    """An active user as an instance holding what a reply needs (id, name); the rest deferred
    (read from the database if something asks for it)."""
    loaded = {User._meta.pk.attname: user_id, "username": username, "is_active": True}
    fields = [field.attname for field in User._meta.concrete_fields if field.attname in loaded]
    return User.from_db(router.db_for_read(User), fields, [loaded[name] for name in fields])
