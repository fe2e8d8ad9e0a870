"""`python -m bench.rooms`: what the read side of the chat costs in the database.

Runs the domain functions the workers and the REST API call (no gateway, no Redis) on a fresh
SQLite file, or on an empty database given with --database-url, and prints, for a user in 20
rooms and for one in 200 rooms: list_rooms' queries and median time; then sync and
load_history paging through the messages. A table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable

from bench.scratch import scratch_database


def timed(work: Callable[[], Any], repeat: int) -> tuple[float, int]:
    """Median seconds of `repeat` calls, and the queries one call makes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(queries)


def fill(user: Any, others: list[Any], rooms: int, messages_per_room: int) -> None:
    from chat.models import ChatMessage, ChatRoom, Membership

    made = ChatRoom.objects.bulk_create([ChatRoom(name=f"{user.username} {n}") for n in range(rooms)])
    Membership.objects.bulk_create([Membership(room=room, user=member) for room in made
                                    for member in (user, *others)], batch_size=2000)
    ChatMessage.objects.bulk_create([ChatMessage(room=room, user=others[n % len(others)], text=f"message {n}")
                                     for room in made for n in range(messages_per_room)], batch_size=2000)


def run(repeat: int, messages_per_room: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from chat import reading, rooms
    from chat.serializers import RoomSerializer

    User = get_user_model()
    members = [User.objects.create_user(f"member{n}") for n in range(9)]
    results: dict[str, Any] = {}
    for count in (20, 200):
        user = User.objects.create_user(f"in{count}rooms")
        fill(user, members, count, messages_per_room)
        seconds, queries = timed(lambda: rooms.list_rooms(user), repeat)
        results[f"list_rooms_{count}"] = {"rooms": count, "queries": queries, "median_ms": round(seconds * 1000, 2)}
        # The whole reply, as a worker builds it: the query and REST framework's serialization.
        seconds, _ = timed(lambda: RoomSerializer(rooms.list_rooms(user), many=True).data, repeat)
        results[f"list_rooms_reply_{count}"] = {"rooms": count, "median_ms": round(seconds * 1000, 2)}

    def sync_all() -> int:
        after, seen, more = 0, 0, True
        while more:
            page = reading.sync(user, after, reading.SYNC_LIMIT_MAX)
            seen += len(page.messages)
            more = page.has_more
            after = page.messages[-1].pk if page.messages else after
        return seen

    started = time.perf_counter()
    synced = sync_all()
    sync_seconds = time.perf_counter() - started
    results["sync"] = {"messages": synced, "page": reading.SYNC_LIMIT_MAX,
                       "messages_per_s": round(synced / sync_seconds)}
    room_id = rooms.list_rooms(user)[0].room.pk.hex
    seconds, queries = timed(lambda: reading.load_history(user, room_id, None, reading.HISTORY_LIMIT_MAX), repeat)
    results["load_history_100"] = {"queries": queries, "median_ms": round(seconds * 1000, 2)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--messages-per-room", type=int, default=50)
    parser.add_argument("--database-url", default=None, help="an EMPTY database (default: a fresh SQLite file)")
    args = parser.parse_args(argv)

    with scratch_database("rooms", args.database_url) as engine:
        results = run(args.repeat, args.messages_per_room)

    small, large = results["list_rooms_20"], results["list_rooms_200"]
    print(f"database: {engine}, {args.messages_per_room} messages per room, median of {args.repeat} calls")
    print(f"{'measurement':<28}{'queries':>8}{'median ms':>11}")
    print(f"{'list_rooms, 20 rooms':<28}{small['queries']:>8}{small['median_ms']:>11}")
    print(f"{'list_rooms, 200 rooms':<28}{large['queries']:>8}{large['median_ms']:>11}")
    for count in (20, 200):
        print(f"{f'  + serialized, {count} rooms':<28}{'':>8}{results[f'list_rooms_reply_{count}']['median_ms']:>11}")
    print(f"{'load_history, limit 100':<28}{results['load_history_100']['queries']:>8}"
          f"{results['load_history_100']['median_ms']:>11}")
    print(f"sync: {results['sync']['messages']} messages in pages of {results['sync']['page']}: "
          f"{results['sync']['messages_per_s']} messages/s")
    print(f"list_rooms time ratio, 200 rooms / 20 rooms: {large['median_ms'] / small['median_ms']:.1f}")
    print(json.dumps({"database": engine, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
