"""`chat.client.ChatClient` against a scripted gateway (an aiohttp server in the test): the cases a
real gateway shows rarely (a `timeout` reply, a connection lost before the reply)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from chat.client import SUBPROTOCOL, ChatClient, ChatError

CATALOGUE = {"new_message": {"retry": True}, "create_room": {"retry": False}, "sync": {"retry": True}}
WAIT = 10.0


class ScriptedGateway:
    """Authenticates any token (with CATALOGUE); answers other frames with `answer(ws, frame)`."""

    def __init__(self, answer: Callable[[web.WebSocketResponse, dict[str, Any]], Any]) -> None:
        self.answer = answer
        self.frames: list[dict[str, Any]] = []
        self.connections = 0
        self.protocols: list[str | None] = []

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
        await ws.prepare(request)
        self.connections += 1
        self.protocols.append(ws.ws_protocol)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            self.frames.append(frame)
            if frame["action"] == "authenticate":
                await ws.send_json({"uuid": frame["uuid"], "action": "authenticate", "status": "success",
                                    "user": {"username": "alice"}, "actions": CATALOGUE})
            else:
                await self.answer(ws, frame)
        return ws


def ok(frame: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"uuid": frame["uuid"], "action": frame["action"], "status": "success", **fields}


def error(frame: dict[str, Any], code: str) -> dict[str, Any]:
    return {"uuid": frame["uuid"], "action": frame["action"], "status": "error", "error_code": code,
            "error_message": code}


def scenario(answer, body, **options):
    async def run() -> Any:
        gateway = ScriptedGateway(answer)
        app = web.Application()
        app.router.add_get("/ws", gateway.handler)
        async with TestServer(app) as server:
            client = ChatClient(str(server.make_url("/ws")), token="t", backoff=(0.01, 0.05), **options)
            try:
                return await asyncio.wait_for(body(client, gateway), WAIT)
            finally:
                await client.close()

    return asyncio.run(run())


def test_it_authenticates_with_the_subprotocol_and_learns_what_it_may_retry():
    async def answer(ws, frame):
        await ws.send_json(ok(frame, rooms=[]))

    async def body(client, gateway):
        reply = await client.connect()
        assert reply["user"] == {"username": "alice"} and client.user == {"username": "alice"}
        assert (await client.request("list_rooms"))["rooms"] == []
        return gateway, [client.may_retry(a) for a in ("new_message", "create_room", "ping", "list_rooms")]

    gateway, retry = scenario(answer, body)
    assert gateway.protocols == [SUBPROTOCOL]
    assert gateway.frames[0] == {"uuid": gateway.frames[0]["uuid"], "action": "authenticate", "token": "t"}
    assert retry == [True, False, True, False]


def test_a_timeout_is_retried_with_the_same_uuid_for_a_retryable_action_only():
    tries: dict[str, int] = {}

    async def answer(ws, frame):
        tries[frame["action"]] = tries.get(frame["action"], 0) + 1
        if tries[frame["action"]] == 1:
            await ws.send_json(error(frame, "timeout"))
        else:
            await ws.send_json(ok(frame))

    async def body(client, gateway):
        await client.request("new_message", room="r", text="hi", uuid="m-1")
        with pytest.raises(ChatError) as refused:
            await client.request("create_room", name="x", uuid="c-1")
        return refused.value.code, [(f["action"], f["uuid"]) for f in gateway.frames[1:]]

    code, sent = scenario(answer, body)
    assert code == "timeout"
    assert sent == [("new_message", "m-1"), ("new_message", "m-1"), ("create_room", "c-1")]


def test_a_lost_connection_resends_what_is_safe_after_authenticating_again():
    seen: set[str] = set()

    async def answer(ws, frame):
        if frame["uuid"] in ("m-1", "c-1") and frame["uuid"] not in seen:
            seen.add(frame["uuid"])
            await ws.close()  # lost before the reply, the first time each uuid comes
            return
        await ws.send_json(ok(frame))

    async def body(client, gateway):
        await client.connect()
        first = await client.request("new_message", room="r", text="hi", uuid="m-1")
        with pytest.raises(ChatError) as lost:
            await client.request("create_room", name="x", uuid="c-1")
        # The next request connects and authenticates again first.
        assert (await client.request("list_rooms"))["status"] == "success"
        return first, lost.value.code, gateway

    first, code, gateway = scenario(answer, body)
    # The scripted gateway closes at the first sight of each uuid: the message, resent with its
    # uuid after authenticating again, is answered; the room is not sent twice.
    assert first["status"] == "success"
    assert code == "connection_lost"
    actions = [f["action"] for f in gateway.frames]
    assert actions.count("new_message") == 2 and actions.count("create_room") == 1
    assert actions.count("authenticate") == 3  # the first connection, then one after each loss
    assert actions[-2:] == ["authenticate", "list_rooms"]


def test_frames_that_answer_nothing_are_buffered_bounded_and_events_go_to_handlers():
    async def answer(ws, frame):
        for n in range(5):
            await ws.send_json({"uuid": f"theirs-{n}", "action": "new_message", "status": "success",
                                "message": {"id": n}})
        await ws.send_json({"action": "event", "event": "order_shipped", "data": {"order": 7}})
        await ws.send_json({"action": "event", "event": "poll_closed", "data": {"poll": 1}})
        await ws.send_json(ok(frame))

    async def body(client, gateway):
        shipped: list[Any] = []
        client.on("order_shipped", shipped.append)
        await client.request("ping")
        buffered = [await client.next_frame() for _ in range(3)]
        return shipped, buffered, client.dropped_frames

    shipped, buffered, dropped = scenario(answer, body, max_buffered_frames=3)
    assert shipped == [{"order": 7}]
    # Five broadcasts and one unhandled event into a buffer of three: the oldest three went.
    assert [f.get("uuid") or f["event"] for f in buffered] == ["theirs-3", "theirs-4", "poll_closed"]
    assert dropped == 3


def test_sync_pages_while_has_more():
    async def answer(ws, frame):
        after = frame["after"]
        messages = [{"id": n} for n in range(after + 1, min(after + 3, 5) + 1)]
        await ws.send_json(ok(frame, messages=messages, has_more=messages[-1]["id"] < 5))

    async def body(client, gateway):
        return [m["id"] for m in await client.sync(0, limit=2)]

    assert scenario(answer, body) == [1, 2, 3, 4, 5]


def test_a_refused_authentication_is_an_error():
    async def run():
        async def handler(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                frame = json.loads(message.data)
                await ws.send_json(error(frame, "invalid_token"))
            return ws

        app = web.Application()
        app.router.add_get("/ws", handler)
        async with TestServer(app) as server:
            client = ChatClient(str(server.make_url("/ws")), token="bad")
            try:
                with pytest.raises(ChatError) as refused:
                    await client.connect()
                return refused.value.code
            finally:
                await client.close()

    assert asyncio.run(run()) == "invalid_token"


def test_changes_pages_by_cursor_until_has_more_is_false():
    pages = {"": ([], "c0", False), "c0": ([{"action": "edit_message", "cursor": "c1"}], "c1", True),
             "c1": ([{"action": "add_reaction", "cursor": "c2"}], "c2", False)}

    async def answer(ws, frame):
        events, cursor, more = pages[frame["since"]]
        await ws.send_json(ok(frame, events=events, cursor=cursor, has_more=more))

    async def body(client, gateway):
        start = await client.changes("")
        caught_up = await client.changes(start[1], limit=1)
        return start, caught_up, [(f["since"], f.get("limit")) for f in gateway.frames[1:]]

    start, caught_up, sent = scenario(answer, body)
    assert start == ([], "c0")
    assert caught_up == ([{"action": "edit_message", "cursor": "c1"}, {"action": "add_reaction", "cursor": "c2"}], "c2")
    assert sent == [("", 200), ("c0", 1), ("c1", 1)]
