"""`python -m bench.feed`: what `sync` by cursor costs on a feed of 100,000 stored changes.

Fills a fresh SQLite file, or an empty database given with --database-url, with --changes changes
(bulk inserts: messages posted, edited and reacted to) across --rooms rooms, the user a member of
half of them; then times pages of `sync` by cursor (chat.catchup.sync_since, pages of 500) from an
old cursor (the first change) and from a recent one (--recent changes before the end), and the
feed's own query (chat.feed.read) alone. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from typing import Any, Callable

from bench.scratch import scratch_database

# Of every ten changes of a room: eight messages posted, then an edit and a reaction of the last one.
BATCH = 5000


def fill(changes: int, rooms: int) -> tuple[Any, int]:
    """The user and how many of the changes are theirs. Positions as PostgreSQL writes them: each
    change's xid is a transaction that has ended (below the horizon), in id order, a few changes a
    transaction where the server has handed out fewer xids than there are changes."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from chat import feed
    from chat.models import ChatChange, ChatMessage, ChatRoom, Membership

    User = get_user_model()
    user, other = User.objects.create_user("reader"), User.objects.create_user("writer")
    made = ChatRoom.objects.bulk_create([ChatRoom(name=f"room {n}") for n in range(rooms)])
    Membership.objects.bulk_create([Membership(room=room, user=other) for room in made] +
                                   [Membership(room=room, user=user) for room in made[::2]])
    theirs = {room.pk for room in made[::2]}
    horizon = feed.now().xid if feed.by_transaction() else 0
    Kind = ChatChange.Kind
    started = timezone.now() - datetime.timedelta(days=1)
    mine = 0
    last_message: dict[Any, int] = {}
    for first in range(0, changes, BATCH):
        count = min(BATCH, changes - first)
        # By round (every room has had one change), so that every room gets every kind.
        kinds = [Kind.EDIT_MESSAGE if n // rooms % 10 == 8 else Kind.ADD_REACTION if n // rooms % 10 == 9
                 else Kind.NEW_MESSAGE for n in range(first, first + count)]
        where = [made[n % rooms] for n in range(first, first + count)]
        posted = ChatMessage.objects.bulk_create(
            [ChatMessage(room=room, user=other, text=f"message {first + n}")
             for n, (kind, room) in enumerate(zip(kinds, where)) if kind == Kind.NEW_MESSAGE])
        posted_in = iter(posted)
        rows = []
        for n, (kind, room) in enumerate(zip(kinds, where)):
            if kind == Kind.NEW_MESSAGE:
                last_message[room.pk] = next(posted_in).pk
            if room.pk not in last_message:
                continue  # an edit or reaction before the room's first message: none
            position = first + n
            xid = 1 + position * max(horizon - 2, 0) // changes if horizon else 0
            rows.append(ChatChange(kind=kind, room=room, message_id=last_message[room.pk], user=other, xid=xid,
                                   at=started + datetime.timedelta(milliseconds=position)))
            mine += room.pk in theirs
        ChatChange.objects.bulk_create(rows)
    return user, mine


def timed(work: Callable[[], Any]) -> tuple[float, int, Any]:
    """Seconds of one call, the queries it made, and what it returned."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - started
    return seconds, len(queries), result


def pages(user: Any, since: str, count: int, limit: int) -> dict[str, Any]:
    """`count` pages of sync from `since`, one after the other (fewer where the feed ends): the
    median time and the queries of a page, and of the feed's query alone from the same cursors."""
    from chat import catchup, feed

    sync_ms, read_ms, queries, events = [], [], set(), 0
    for _ in range(count):
        seconds, made, page = timed(lambda: catchup.sync_since(user, since, limit))
        start = feed.parse_cursor(since)
        # From now ("") the feed's part is its position of now alone.
        read_seconds, _, _ = timed(feed.now if start is None else lambda: feed.read(user.pk, start, limit))
        sync_ms.append(seconds * 1000)
        read_ms.append(read_seconds * 1000)
        queries.add(made)
        events += len(page.events)
        since = page.cursor
        if not page.has_more:
            break
    return {"pages": len(sync_ms), "events": events, "queries": sorted(queries),
            "sync_ms": round(statistics.median(sync_ms), 1), "feed_read_ms": round(statistics.median(read_ms), 1)}


def walk(user: Any, since: str, limit: int) -> dict[str, Any]:
    """Every page from `since` to the end: pages, events, seconds."""
    from chat import catchup

    started, count, events = time.perf_counter(), 0, 0
    while True:
        page = catchup.sync_since(user, since, limit)
        count, events, since = count + 1, events + len(page.events), page.cursor
        if not page.has_more:
            return {"pages": count, "events": events, "seconds": round(time.perf_counter() - started, 2)}


def run(changes: int, rooms: int, limit: int, count: int, recent: int, whole: bool) -> dict[str, Any]:
    from django.db import connection

    from chat import feed
    from chat.models import ChatChange

    started = time.perf_counter()
    user, mine = fill(changes, rooms)
    fill_seconds = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    oldest = ChatChange.objects.order_by("xid", "id").first()
    old = feed.Position(oldest.xid, oldest.pk - 1).cursor()
    near_end = ChatChange.objects.order_by("-xid", "-id")[recent - 1:recent].get()
    results: dict[str, Any] = {
        "changes": changes, "users_changes": mine, "rooms": rooms, "limit": limit,
        "fill_s": round(fill_seconds, 1),
        "old_cursor": pages(user, old, count, limit),
        "recent_cursor": pages(user, feed.position(near_end).cursor(), count, limit),
        "from_now": pages(user, "", 1, limit),
    }
    if whole:
        results["whole_walk"] = walk(user, old, limit)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100_000, help="changes stored (default 100,000)")
    parser.add_argument("--rooms", type=int, default=100, help="rooms; the user is a member of every other one")
    parser.add_argument("--limit", type=int, default=500, help="sync's page size (default 500, its largest)")
    parser.add_argument("--pages", type=int, default=10, help="pages timed from each cursor (default 10)")
    parser.add_argument("--recent", type=int, default=2000,
                        help="how many changes before the end the recent cursor is (default 2,000)")
    parser.add_argument("--whole", action="store_true", help="also walk the whole feed from the old cursor")
    parser.add_argument("--database-url", default=None, help="an EMPTY database (default: a fresh SQLite file)")
    args = parser.parse_args(argv)
    if args.changes < args.recent or args.rooms < 2:
        parser.error("--changes must be at least --recent, and --rooms at least 2")

    with scratch_database("feed", args.database_url) as engine:
        results = run(args.changes, args.rooms, args.limit, args.pages, args.recent, args.whole)

    print(f"database: {engine}, {results['changes']} changes in {results['rooms']} rooms, "
          f"{results['users_changes']} of them the user's; filled in {results['fill_s']} s")
    print(f"{'sync by cursor, pages of ' + str(args.limit):<34}{'pages':>6}{'queries':>9}{'sync ms':>9}"
          f"{'feed.read ms':>14}")
    for name, label in (("old_cursor", "from an old cursor (the first)"),
                        ("recent_cursor", f"from {args.recent} changes before the end"),
                        ("from_now", 'from now ("")')):
        figures = results[name]
        queries = "/".join(map(str, figures["queries"]))
        print(f"{label:<34}{figures['pages']:>6}{queries:>9}{figures['sync_ms']:>9}{figures['feed_read_ms']:>14}")
    print(f"page time ratio, old cursor / recent cursor: "
          f"{results['old_cursor']['sync_ms'] / results['recent_cursor']['sync_ms']:.1f}")
    if "whole_walk" in results:
        whole = results["whole_walk"]
        print(f"the whole feed from the old cursor: {whole['pages']} pages, {whole['events']} events, "
              f"{whole['seconds']} s")
    print(json.dumps({"database": engine, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
