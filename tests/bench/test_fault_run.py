"""The fault run's schedule, and its client against a scripted gateway (an aiohttp server in the
test): it answers a `resync` frame with `sync` from its newest id, retries a `timeout` with the
same uuid, and after a 1001 close reconnects, sends again with the same uuid what got no reply,
and syncs."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from bench import fault_run
from bench.fault_invariants import check_no_leaks, check_replies

ROOM = "a" * 32
USER = {"id": 1, "username": "alice", "token": "t"}
# Waits on events; generous, never a measured bound.
WAIT = 10.0

# A scripted gateway: called with (connection number, frame, ws); returns the replies to send.
Script = Callable[[int, dict[str, Any], web.WebSocketResponse], Awaitable[list[dict[str, Any]]]]


def first_faults(seed: int, count: int) -> list[fault_run.Fault]:
    return list(itertools.islice(fault_run.fault_schedule(seed, 3, 2), count))


def test_the_schedule_is_the_seeds_alone_and_each_round_holds_every_kind():
    assert first_faults(18, 12) == first_faults(18, 12)
    assert first_faults(18, 12) != first_faults(19, 12)
    kinds = len(fault_run.FAULT_KINDS)
    faults = first_faults(18, 3 * kinds)
    for start in range(0, 3 * kinds, kinds):
        assert {fault.kind for fault in faults[start:start + kinds]} == set(fault_run.FAULT_KINDS)


def message(message_id: int) -> dict[str, Any]:
    return {"id": message_id, "room": ROOM, "user": {"username": "alice"}, "text": "hi"}


def success(frame: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"uuid": frame["uuid"], "action": frame["action"], "status": "success", **fields}


async def run_against(script: Script, done: Callable[[list[tuple[int, dict[str, Any]]]], bool],
                      pending: dict[str, Any] | None = None) -> tuple[
        fault_run.ChatClient, list[tuple[int, dict[str, Any]]]]:
    """Run one client (sending nothing new; `pending`, a message it has to send) against `script`
    until `done(frames the gateway received)`."""
    received: list[tuple[int, dict[str, Any]]] = []
    finished = asyncio.Event()
    connections = 0

    async def handler(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        conn = connections
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            frame = json.loads(msg.data)
            received.append((conn, frame))
            for reply in await script(conn, frame, ws):
                await ws.send_str(json.dumps(reply))
            if done(received):
                finished.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = fault_run.ChatClient("c0", USER, [ROOM], [f"http://127.0.0.1:{port}/ws"], seed=1, message_interval=3600)
    client.sending = False
    if pending is not None:
        client.pending[pending["uuid"]] = pending
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(client.run(session))
        try:
            await asyncio.wait_for(finished.wait(), WAIT)
            # Every reply the gateway sent has been read: nothing pending, nothing in flight.
            assert await fault_run.wait_until(lambda: client.settled, WAIT)
            await client.close()
            await asyncio.wait_for(task, WAIT)
        finally:
            task.cancel()
            await runner.cleanup()
    return client, received


def basic(conn: int, frame: dict[str, Any]) -> list[dict[str, Any]]:
    if frame["action"] == "authenticate":
        return [success(frame, user={"username": "alice"})]
    if frame["action"] == "sync":
        return [success(frame, messages=[message(7)] if frame["after"] < 7 else [], has_more=False)]
    return []


def test_a_resync_frame_is_answered_with_sync_from_the_newest_id():
    async def script(conn, frame, ws):
        replies = basic(conn, frame)
        if frame["action"] == "sync" and frame["after"] == 0:
            replies.append({"action": "resync", "reason": "messages may have been missed"})
        return replies

    def done(received):
        return [f["after"] for _, f in received if f["action"] == "sync"] == [0, 7]

    client, received = asyncio.run(run_against(script, done))
    assert [f["action"] for _, f in received] == ["authenticate", "sync", "sync"]
    assert {conn for conn, _ in received} == {1}  # no reconnect
    assert check_replies([client.log]) == [] and check_no_leaks([client.log], {"c0": "alice"}) == []


def test_a_timeout_and_a_1001_close_are_retried_with_the_same_uuid_then_synced():
    attempts = 0

    async def script(conn, frame, ws):
        nonlocal attempts
        if frame["action"] != "new_message":
            return basic(conn, frame)
        attempts += 1
        if attempts == 1:
            return [{"uuid": frame["uuid"], "action": "new_message", "status": "error", "error_code": "timeout",
                     "error_message": "No reply"}]
        if attempts == 2:
            await ws.close(code=1001, message=b"Server shutting down")
            return []
        return [success(frame, room=ROOM, message=message(8))]

    def done(received):
        return any(f["action"] == "sync" and conn == 2 for conn, f in received) and \
            sum(1 for _, f in received if f["action"] == "new_message") == 3

    pending = {"uuid": "c0-100", "action": "new_message", "room": ROOM, "text": "hi"}
    client, received = asyncio.run(run_against(script, done, pending))
    sends = [(conn, f["uuid"]) for conn, f in received if f["action"] == "new_message"]
    assert {uuid for _, uuid in sends} == {"c0-100"}, sends
    assert [conn for conn, _ in sends] == [1, 1, 2]
    # On the second connection: authenticate, the retried message, then the catch-up.
    assert [f["action"] for conn, f in received if conn == 2][:3] == ["authenticate", "new_message", "sync"]
    assert client.acked == {"c0-100"} and not client.pending
    assert check_replies([client.log]) == []
