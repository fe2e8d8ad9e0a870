"""A small WebSocket client for the end-to-end tests: send frames, wait for the reply that matches."""

from __future__ import annotations

import asyncio
import json
import uuid as uuidlib
from typing import Any, Callable

import aiohttp

Predicate = Callable[[dict[str, Any]], bool]

# Frames read while waiting for another are kept for a later expect(); a test that leaves
# more than this many unread has gone wrong.
MAX_BACKLOG = 10_000
# The keys of a message object (docs/protocol.md).
MESSAGE_KEYS = {"id", "user", "room", "timestamp", "text", "edited_at", "deleted", "reactions"}


class ConnectionClosed(AssertionError):
    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed with code {code}: {reason}")
        self.code = code
        self.reason = reason


def close_code(ws: aiohttp.ClientWebSocketResponse, message: aiohttp.WSMessage) -> int | None:
    """The close code of a connection that `message` (CLOSE, CLOSING, CLOSED or ERROR) ended.

    For CLOSE, the code in the Close frame the server sent: the connection's close code (RFC 6455,
    7.1.5). Not `ws.close_code`: aiohttp sets that to 1006 when its own Close reply cannot be
    written any more, which happens when the frame is read after the server, having sent it,
    closed the TCP connection (the gateway waits for the reply for at most its close timeout).
    """
    if message.type == aiohttp.WSMsgType.CLOSE:
        return message.data
    return ws.close_code


def frame_shape(frame: dict[str, Any]) -> dict[str, Any]:
    """A frame's keys, nested one level, without its values (ids, times and uuids differ): what
    two servers' replies to the same request must share."""
    return {key: sorted(value) if isinstance(value, dict) else type(value).__name__ for key, value in frame.items()}


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.backlog: list[dict[str, Any]] = []
        self.username: str | None = None

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, url: str, **kwargs: Any) -> "Client":
        return cls(await session.ws_connect(url, autoping=True, **kwargs))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def request(self, action: str, timeout: float = 15, **fields: Any) -> dict[str, Any]:
        """Send one frame and return the reply that carries its uuid."""
        frame_uuid = fields.pop("uuid", None) or uuidlib.uuid4().hex
        await self.send({"uuid": frame_uuid, "action": action, **fields})
        return await self.expect(lambda f: f.get("uuid") == frame_uuid and f.get("action") == action, timeout)

    async def ok(self, action: str, timeout: float = 15, **fields: Any) -> dict[str, Any]:
        """request(), asserting that the reply is a success."""
        reply = await self.request(action, timeout, **fields)
        assert reply["status"] == "success", reply
        return reply

    async def barrier(self) -> None:
        """Return once every broadcast already received by some other client has reached this one too.

        A round trip through a worker (the connection must be authenticated): its reply comes to
        this connection's gateway process over the same Redis subscription as the broadcasts, so
        after every one published before the request. Afterwards `unread()` holds all of them.
        """
        await self.ok("list_rooms")
        await self.drain()

    async def authenticate(self, user: dict[str, Any]) -> dict[str, Any]:
        reply = await self.request("authenticate", token=user["token"])
        assert reply["status"] == "success", reply
        self.username = user["username"]
        return reply

    async def expect(self, predicate: Predicate, timeout: float = 15) -> dict[str, Any]:
        for index, frame in enumerate(self.backlog):
            if predicate(frame):
                return self.backlog.pop(index)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; unread: {self.backlog[-5:]}")
            frame = await self._receive(remaining)
            if predicate(frame):
                return frame
            assert len(self.backlog) < MAX_BACKLOG, "too many unread frames"
            self.backlog.append(frame)

    def unread(self, predicate: Predicate) -> list[dict[str, Any]]:
        return [frame for frame in self.backlog if predicate(frame)]

    async def drain(self) -> None:
        """Move every frame already received into the backlog without waiting for more."""
        while True:
            try:
                frame = await self._receive(0.001)
            except asyncio.TimeoutError:
                return
            self.backlog.append(frame)

    async def expect_close(self, timeout: float = 15) -> int | None:
        """Wait for the server to close the connection; return its close code."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s")
            try:
                await self._receive(remaining)
            except ConnectionClosed as closed:
                return closed.code

    async def _receive(self, timeout: float) -> dict[str, Any]:
        message = await self.ws.receive(timeout=timeout)
        if message.type == aiohttp.WSMsgType.TEXT:
            return json.loads(message.data)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise ConnectionClosed(close_code(self.ws, message), message.extra)
        if message.type == aiohttp.WSMsgType.ERROR:
            raise ConnectionClosed(close_code(self.ws, message), str(message.data))
        raise AssertionError(f"unexpected frame type {message.type}")

    async def close(self) -> None:
        await self.ws.close()


async def request_until_success(client: Client, frame: dict[str, Any], bound: float, reply_timeout: float,
                                retry_pause: float = 0.1) -> tuple[dict[str, Any], int]:
    """Send `frame` and wait for its reply (up to `reply_timeout`), as the chat page does: after a
    `timeout` error, the same frame again (same uuid) after `retry_pause`, for at most `bound`
    seconds. It never sends again before the reply: under load a reply may take its whole request
    timeout. Any error but `timeout` fails the test. Return the success reply and the attempts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    attempts = 0
    while True:
        await client.send(frame)
        attempts += 1
        reply = await client.expect(lambda f: f.get("uuid") == frame["uuid"] and f.get("action") == frame["action"],
                                    reply_timeout)
        if reply["status"] == "success":
            return reply, attempts
        assert reply["error_code"] == "timeout", reply
        assert loop.time() < deadline, f"{frame['action']} not successful within {bound}s: {reply}"
        await asyncio.sleep(retry_pause)
