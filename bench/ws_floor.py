"""`python -m bench.ws_floor`: what one idle WebSocket costs aiohttp itself.

A bare aiohttp server in a process of its own (uvloop when installed; no aiohttp heartbeat, as
the gateway, whose own heartbeat costs a set entry per connection), whose handler does nothing
but echo; N clients connect, each sends one frame of an authenticate's size and reads the echo,
then all stay open. Prints the server's RSS per idle connection, measured as `python -m bench`
measures the gateway's (RSS after minus RSS before, divided by N): the floor under the
gateway's own figure, whatever the gateway keeps per connection comes on top of it. A line of
text, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time

import aiohttp
import psutil
from aiohttp import web

FRAME = json.dumps({"action": "authenticate", "uuid": "0" * 32, "token": "t" * 40})


def serve(port: int, heartbeat: float) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=heartbeat or None)
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def cookie_header(size: int) -> dict[str, str]:
    """A Cookie header of about `size` bytes, as a browser sends its site's cookies (none for 0)."""
    if size <= 0:
        return {}
    pairs, length, n = [], 0, 0
    while length < size:
        pair = f"c{n}={'v' * 40}"
        pairs.append(pair)
        length += len(pair) + 2
        n += 1
    return {"Cookie": "; ".join(pairs)}


async def connect_all(session: aiohttp.ClientSession, url: str, count: int,
                      concurrency: int, headers: dict[str, str] | None = None) -> list[aiohttp.ClientWebSocketResponse]:
    gate = asyncio.Semaphore(concurrency)
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def one() -> None:
        async with gate:
            ws = await session.ws_connect(url, headers=headers)
            await ws.send_str(FRAME)
            await ws.receive()
            opened.append(ws)

    await asyncio.gather(*(one() for _ in range(count)))
    return opened


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def measure(count: int, heartbeat: float, concurrency: int, cookie_bytes: int = 0) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.ws_floor", "--serve", str(port),
                               "--heartbeat", str(heartbeat)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the echo server did not start") from None
                await asyncio.sleep(0.1)
        process = psutil.Process(server.pid)
        await asyncio.sleep(0.5)
        before = process.memory_info().rss
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            clients = await connect_all(session, f"http://127.0.0.1:{port}/ws", count, concurrency,
                                        cookie_header(cookie_bytes))
            await asyncio.sleep(1.0)  # as python -m bench: 1 s after the last reply
            after = process.memory_info().rss
            for ws in clients:
                await ws.close()
        return {"connections": count, "heartbeat_s": heartbeat, "cookie_bytes": cookie_bytes,
                "rss_per_connection_bytes": round((after - before) / count)}
    finally:
        server.terminate()
        server.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--heartbeat", type=float, default=0.0,
                        help="aiohttp's own heartbeat, seconds (default 0: none, as the gateway)")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--cookie-bytes", type=int, default=0,
                        help="a Cookie header of about this size in each handshake, as a browser sends its site's "
                             "cookies (default 0: none)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.heartbeat)
        return 0
    result = asyncio.run(measure(args.connections, args.heartbeat, args.concurrency, args.cookie_bytes))
    print(f"bare aiohttp echo server, {result['connections']} idle WebSockets, heartbeat {args.heartbeat:g} s, "
          f"cookies {args.cookie_bytes} bytes: RSS per connection {result['rss_per_connection_bytes'] / 1024:.1f} KiB")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
