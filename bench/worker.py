"""`python -m bench.worker`: what a `new_message` costs a worker, without Redis or a gateway.

Runs the worker's own `process_batch` on bus requests as the gateway sends them (10 members in
the room, batches as the consumer gathers them), with DEBUG off as deployed, on a fresh SQLite
file or an EMPTY database given with --database-url; prints the CPU and wall time per message,
the statements for a message alone and for a batch, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from bench.scratch import scratch_database


def run(messages: int, batch: int) -> dict[str, float]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat.models import ChatRoom, Membership
    from workers.dispatch import process_batch

    users = [get_user_model().objects.create_user(f"bench{n}") for n in range(10)]
    room = ChatRoom.objects.create(name="bench")
    Membership.objects.bulk_create([Membership(room=room, user=user) for user in users])

    def request(n: int) -> bytes:
        return json.dumps({"request_id": uuid.uuid4().hex, "reply_to": "bench", "action": "new_message",
                           "session_data": {"user_pk": users[n % len(users)].pk}, "uuid": uuid.uuid4().hex,
                           "room": room.pk.hex, "text": f"message {n}"}).encode()

    def statements(raws: list[bytes]) -> list[str]:
        """The statements (savepoints aside) that answering `raws` together runs; each must succeed."""
        with CaptureQueriesContext(connection) as queries:
            replies = process_batch(raws, "bench_responses")
        for reply in replies:
            assert reply is not None and reply.envelope["response"]["status"] == "success", reply
        return [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"].upper()]

    alone, together = statements([request(-1)]), statements([request(n) for n in range(batch)])
    requests = [request(n) for n in range(messages)]
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, messages, batch):
        for outgoing in process_batch(requests[start:start + batch], "bench_responses"):
            outgoing.encode()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"messages": messages, "batch": batch, "cpu_us_per_message": round(cpu / messages * 1e6, 1),
            "wall_us_per_message": round(wall / messages * 1e6, 1), "statements_per_message": len(alone),
            "statements_per_batch": len(together)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=32, help="requests answered together (the consumer's BATCH_MAX)")
    parser.add_argument("--database-url", default=None, help="an EMPTY database (default: a fresh SQLite file)")
    args = parser.parse_args(argv)

    with scratch_database("worker", args.database_url, deployed=True) as vendor:
        result = {"database": vendor, **run(args.messages, args.batch)}
    print(f"new_message on {result['database']}, batches of {args.batch}: {result['cpu_us_per_message']} us CPU, "
          f"{result['wall_us_per_message']} us wall per message; {result['statements_per_message']} statements "
          f"for a message alone, {result['statements_per_batch']} for a batch")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
