"""The change feed: every stored change gets a position, and `sync` by cursor walks them in order.

A position is (xid, id) of a `ChatChange` row; a cursor is a position as a string. The guarantee
is that a change which commits after a cursor was handed out comes after that cursor, so a client
that resumes from it misses nothing.

On PostgreSQL ids are handed out in one order and committed in another: a plain `id > cursor`
would skip a change that was written before the cursor's and committed after it. So each row
carries its writing transaction's id, positions are ordered by (xid, id), and a reader only hands
out positions below the oldest transaction still running when it looked (`pg_snapshot_xmin`):
every transaction below that has ended, and every later one has an xid at least that big, so it
sorts after. A change is seen as soon as every transaction older than its own has ended (a
transaction left open holds the feed back, never loses a change). On SQLite one writer holds the
database at a time, from its first write to its commit, so ids are in commit order and xid is 0.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Sequence

from django.db import connections, router, transaction
from django.db.models import Q
from django.utils import timezone

from . import errors
from .models import ChatChange, FeedState, Membership

Kind = ChatChange.Kind
# The changes whose row names the one user they concern: theirs only.
PERSONAL_KINDS = (Kind.MARK_READ, Kind.LEAVE_ROOM)
# The kinds of a message's changes: `sync` sends each message once, in its latest state.
MESSAGE_KINDS = frozenset({Kind.NEW_MESSAGE, Kind.DIRECT_MESSAGE, Kind.EDIT_MESSAGE, Kind.DELETE_MESSAGE,
                           Kind.ADD_REACTION, Kind.REMOVE_REACTION})

# PostgreSQL: the writing transaction's id (its top-level one, as a snapshot knows them), and the
# oldest transaction still running as this statement's snapshot sees it.
XID_SQL = "pg_current_xact_id()::text::bigint"
HORIZON_SQL = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"

_CURSOR = re.compile(r"([0-9]{1,19})\.([0-9]{1,19})")


@dataclass(frozen=True, order=True)
class Position:
    xid: int
    id: int

    def cursor(self) -> str:
        return f"{self.xid}.{self.id}"


def parse_cursor(value: Any) -> Position | None:
    """The position a client's `since` names; None for "" (from now)."""
    if not isinstance(value, str):
        raise errors.InvalidMessageFormat("since must be a cursor (a string) from an earlier reply")
    if value == "":
        return None
    found = _CURSOR.fullmatch(value)
    if found is None:
        raise errors.InvalidMessageFormat("since must be a cursor from an earlier reply, or \"\"")
    return Position(int(found[1]), int(found[2]))


def by_transaction(connection=None) -> bool:
    """Whether positions are ordered by transaction id (PostgreSQL) or by id alone (one writer at a time)."""
    return (connection or _connection()).vendor == "postgresql"


def _connection():
    return connections[router.db_for_write(ChatChange)]


def live_cursor(connection, change_id: int, xid: int, horizon: int | None) -> str:
    """The cursor a live reply carries for the change it stored (`horizon`: HORIZON_SQL in the
    statement that wrote it). On PostgreSQL it is the horizon, not the change's own position: a
    change written before it may still be running; the client may get its own change again."""
    if by_transaction(connection):
        return Position(min(horizon, xid), 0).cursor()
    return Position(0, change_id).cursor()


def returning(connection) -> str:
    """What an insert of changes returns, for `live_cursor`: id, xid, horizon."""
    quote = connection.ops.quote_name
    if by_transaction(connection):
        return f"{quote('id')}, {quote('xid')}, {HORIZON_SQL}"
    return f"{quote('id')}, 0, NULL"


# The columns an insert of changes writes, in this order (its values too).
_INSERTED = ("kind", "room", "message", "user", "at", "client_uuid")
# SQL by (rows, backend vendor).
_insert_statements: dict[tuple[int, str], str] = {}


def insert_sql(connection, rows: int = 1) -> str:
    """The insert of `rows` changes (values in `_INSERTED`'s order), returning each one's message id
    and what `live_cursor` takes; made once per number of rows and backend."""
    key = (rows, connection.vendor)
    sql = _insert_statements.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        meta = ChatChange._meta
        columns = [quote(meta.get_field(name).column) for name in _INSERTED]
        values = ["%s"] * len(_INSERTED)
        if by_transaction(connection):
            columns.append(quote("xid"))
            values.append(XID_SQL)
        row = f"({', '.join(values)})"
        sql = _insert_statements[key] = (
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(columns)}) VALUES {', '.join([row] * rows)} "
            f"RETURNING {quote(meta.get_field('message').column)}, {returning(connection)}")
    return sql


def record(kind: Kind, room_id: Any, user_id: int, message_id: int | None = None, client_uuid: str | None = None,
           at: datetime.datetime | None = None) -> str:
    """Store one change (in the caller's transaction, if any); returns the cursor for its live reply."""
    connection = _connection()
    meta = ChatChange._meta
    values = [kind.value, meta.get_field("room").get_db_prep_save(room_id, connection), message_id, user_id,
              meta.get_field("at").get_db_prep_save(at or timezone.now(), connection), client_uuid]
    with connection.cursor() as cursor:
        cursor.execute(insert_sql(connection), values)
        _, change_id, xid, horizon = cursor.fetchone()
    return live_cursor(connection, change_id, xid, horizon)


def done_by(user_id: int, client_uuid: str | None) -> bool:
    """Whether the user's request with this uuid stored a change already (a retry)."""
    return client_uuid is not None and ChatChange.objects.filter(user_id=user_id, client_uuid=client_uuid).exists()


def now() -> Position:
    """The position of now: below every change not yet committed, above every one that is."""
    connection = connections[router.db_for_read(ChatChange)]
    with connection.cursor() as cursor:
        if by_transaction(connection):
            cursor.execute(f"SELECT {HORIZON_SQL}")
            return Position(cursor.fetchone()[0], 0)
        cursor.execute(f"SELECT MAX({connection.ops.quote_name('id')}) FROM "
                       f"{connection.ops.quote_name(ChatChange._meta.db_table)}")
        return Position(0, cursor.fetchone()[0] or 0)


@dataclass(frozen=True)
class FeedPage:
    changes: list[ChatChange]  # in position order
    cursor: Position  # where the next page starts
    has_more: bool


def read(user_id: int, since: Position, limit: int) -> FeedPage:
    """Up to `limit` of the user's changes after `since`: those of the rooms they are a member of,
    and their own read markers and departures. Four queries: the pruned position, now, and the two
    kinds of changes, each read through its own index from the cursor on (one query with an OR of
    the two would read the whole table), merged here."""
    horizon = now()
    below = Q(xid__lt=horizon.xid) if by_transaction() else Q(id__lte=horizon.id)
    changes = ChatChange.objects.filter(below).extra(where=[_after_sql()], params=[since.xid, since.id])
    changes = changes.order_by("xid", "id")
    rooms = Membership.objects.filter(user_id=user_id).values("room_id")
    of_rooms = changes.filter(room_id__in=rooms).exclude(kind=Kind.MARK_READ)[:limit + 1]
    personal = changes.filter(user_id=user_id, kind__in=PERSONAL_KINDS)[:limit + 1]
    # A departure from a room the user is in again is in both.
    merged = {change.pk: change for change in (*of_rooms, *personal)}
    found = sorted(merged.values(), key=position)[:limit + 1]
    # After the changes: a pruning that committed before they were read has moved this too (one
    # transaction), so a page that misses pruned changes is never handed out.
    pruned = FeedState.objects.filter(pk=1).values_list("pruned_xid", "pruned_id").first()
    if pruned is not None and since < Position(*pruned):
        raise errors.CursorExpired()
    changes = found[:limit]
    if len(found) > limit:
        return FeedPage(changes, position(changes[-1]), has_more=True)
    # All of the user's changes below the horizon are here: the next page starts there.
    return FeedPage(changes, max(since, horizon, *(position(change) for change in changes[-1:])), has_more=False)


def _after_sql() -> str:
    """`(xid, id) > (%s, %s)`: a row comparison, which both databases read as a range of the
    indexes (room or user, xid, id); `xid > … OR (xid = … AND id > …)` they would not."""
    quote = connections[router.db_for_read(ChatChange)].ops.quote_name
    table = quote(ChatChange._meta.db_table)
    return f"({table}.{quote('xid')}, {table}.{quote('id')}) > (%s, %s)"


def position(change: ChatChange) -> Position:
    return Position(change.xid, change.pk)


@dataclass(frozen=True)
class Pruned:
    changes: int
    through: Position | None


def prune(older_than: datetime.datetime, batch: int = 1000) -> Pruned:
    """Delete the changes made before `older_than`, oldest first, `batch` at a time, and move the
    pruned position past them (cursors before it are expired)."""
    deleted = 0
    through: Position | None = None
    while True:
        with transaction.atomic():
            oldest = list(ChatChange.objects.order_by("id").values_list("id", "xid", "at")[:batch])
            gone: list[tuple[int, int]] = []
            for change_id, xid, at in oldest:
                if at >= older_than:
                    break
                gone.append((change_id, xid))
            if not gone:
                return Pruned(deleted, through)
            # By id, not by range: a change committed since, with an older id, stays.
            ChatChange.objects.filter(id__in=[change_id for change_id, _ in gone]).delete()
            newest = max(Position(xid, change_id) for change_id, xid in gone)
            state, _ = FeedState.objects.select_for_update().get_or_create(pk=1)
            if newest > Position(state.pruned_xid, state.pruned_id):
                state.pruned_xid, state.pruned_id = newest.xid, newest.id
                state.save(update_fields=["pruned_xid", "pruned_id"])
            through = max(through, newest) if through is not None else newest
            deleted += len(gone)
        if len(gone) < len(oldest) or len(oldest) < batch:
            return Pruned(deleted, through)


def message_changes(changes: Sequence[ChatChange]) -> list[int]:
    """The ids of the messages these changes are about, each once."""
    return list(dict.fromkeys(change.message_id for change in changes if change.kind in MESSAGE_KINDS))
