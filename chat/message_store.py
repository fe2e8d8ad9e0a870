"""The statements on the chat's hot path, a new message: built once, run many times.

Storing a message is two statements: the room's members (joined with their accounts, so the
sender's state comes in the same round trip) and the insert. Built through the ORM each time,
the two cost more in Python than in the database (measured by `scripts.bench_worker`); so the
SQL is made once per database connection's backend, from the models' own metadata (tables,
columns, quoting, value adaptation), and the cursor runs it directly.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.utils import timezone

from .models import ChatMessage, Membership

User = get_user_model()


class Member(NamedTuple):
    user_id: int
    is_active: bool
    username: str


# The columns the insert writes, in this order (insert_message's values too).
_INSERTED = ("user", "room", "date_created", "text", "client_uuid")
_statements: dict[str, tuple[str, str]] = {}


def _connection():
    return connections[router.db_for_write(ChatMessage)]


def _sql(connection) -> tuple[str, str]:
    """(members query, insert) for this connection's backend, made on first use."""
    built = _statements.get(connection.vendor)
    if built is None:
        members = Membership.objects.filter(room_id=uuid.UUID(int=0)).values_list(
            "user_id", "user__is_active", "user__username")
        members_sql, params = members.query.sql_with_params()
        if len(params) != 1:  # the room id, and nothing else, is a parameter
            raise RuntimeError(f"unexpected parameters in the members query: {params!r}")
        quote = connection.ops.quote_name
        meta = ChatMessage._meta
        columns = ", ".join(quote(meta.get_field(name).column) for name in _INSERTED)
        insert_sql = (f"INSERT INTO {quote(meta.db_table)} ({columns}) "
                      f"VALUES ({', '.join(['%s'] * len(_INSERTED))})")
        if connection.features.can_return_columns_from_insert:
            insert_sql += f" RETURNING {quote(meta.pk.column)}"
        built = _statements[connection.vendor] = (members_sql, insert_sql)
    return built


def room_members(room_uuid: uuid.UUID) -> list[Member]:
    """Every member of the room with their account's state, in one query (no order)."""
    connection = _connection()
    members_sql, _ = _sql(connection)
    room_value = Membership._meta.get_field("room").get_db_prep_value(room_uuid, connection)
    with connection.cursor() as cursor:
        cursor.execute(members_sql, [room_value])
        return [Member(user_id, bool(active), username) for user_id, active, username in cursor.fetchall()]


def insert_message(author, room_uuid: uuid.UUID, text: str, client_uuid: str | None) -> ChatMessage:
    """Insert one message and return it as a saved instance, its author attached.

    Raises IntegrityError for a (user, client uuid) already stored. Run inside a transaction or
    savepoint when the caller is in one (a failed statement must not spoil it, on PostgreSQL).
    """
    connection = _connection()
    _, insert_sql = _sql(connection)
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


def author(member: Member):
    """The sender as a user instance holding what a message needs (id, name); the rest deferred."""
    loaded = {User._meta.pk.attname: member.user_id, "username": member.username, "is_active": True}
    fields = [field.attname for field in User._meta.concrete_fields if field.attname in loaded]
    return User.from_db(router.db_for_read(User), fields, [loaded[name] for name in fields])
