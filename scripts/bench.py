"""`python -m scripts.bench`: new_message round trips per second through the real stack.

Starts its own stack (embedded Redis, a fresh SQLite file unless --database-url is given, the
gunicorn gateway and N workers), opens authenticated clients, each posting to a room of its own
and waiting for its reply before the next (closed loop), then prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from scripts.stack import Stack


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def client_loop(session: aiohttp.ClientSession, url: str, user: dict, room: str, count: int,
                      latencies: list[float]) -> None:
    async with session.ws_connect(url) as ws:
        await ws.send_json({"uuid": "auth", "action": "authenticate", "token": user["token"]})
        reply = await ws.receive_json(timeout=30)
        if reply.get("status") != "success":
            raise RuntimeError(f"authenticate failed: {reply}")
        for n in range(count):
            frame_uuid = uuid.uuid4().hex
            started = time.perf_counter()
            await ws.send_json({"uuid": frame_uuid, "action": "new_message", "room": room, "text": f"bench {n}"})
            while True:
                reply = await ws.receive_json(timeout=30)
                if reply.get("uuid") == frame_uuid:
                    break
            if reply.get("status") != "success":
                raise RuntimeError(f"new_message failed: {reply}")
            latencies.append(time.perf_counter() - started)


async def measure(url: str, fixtures: dict, per_client: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    rooms = {room["members"][0]: room["id"] for room in fixtures["rooms"]}
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(session, url, user, rooms[user["id"]], per_client, latencies)
                               for user in fixtures["users"]))
        return time.perf_counter() - started, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=100, help="messages per client")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gateway-processes", type=int, default=1)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args(argv)

    work_dir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    stack = Stack.create(log_dir=work_dir, DATABASE_URL=args.database_url or f"sqlite:///{work_dir / 'bench.sqlite3'}",
                         LOG_LEVEL="WARNING", RATE_LIMIT="100000", RATE_LIMIT_BURST="100000")
    try:
        stack.start_redis()
        stack.manage("migrate", "--noinput")
        fixtures = json.loads(stack.manage("chat_fixtures", "--users", str(args.clients), "--rooms",
                                           str(args.clients), "--room-size", "1").stdout)
        stack.start_workers([f"bench_worker_{n}" for n in range(1, args.workers + 1)])
        _, port = stack.start_gateway(processes=args.gateway_processes)
        url = f"http://127.0.0.1:{port}/ws"
        asyncio.run(measure(url, fixtures, 5))  # warm-up: connections, caches
        elapsed, latencies = asyncio.run(measure(url, fixtures, args.messages))
    finally:
        stack.stop()
    total = len(latencies)
    result = {
        "benchmark": "new_message_round_trip",
        "workers": args.workers,
        "gateway_processes": args.gateway_processes,
        "clients": len(fixtures["users"]),
        "messages": total,
        "seconds": round(elapsed, 3),
        "round_trips_per_second": round(total / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p90": round(percentile(latencies, 0.90) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
            "mean": round(statistics.fmean(latencies) * 1000, 2),
        },
    }
    print(f"new_message round trips: {result['messages']} messages, {result['clients']} clients, "
          f"{args.workers} workers, {args.gateway_processes} gateway process(es)")
    print(f"  {result['round_trips_per_second']:>9} round trips/s")
    for key, value in result["latency_ms"].items():
        print(f"  {key:>5} latency {value:>8} ms")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
