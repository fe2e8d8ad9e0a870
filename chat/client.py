"""An asyncio client of the chat's WebSocket protocol, for bots, scripts and tests.

    async with ChatClient("ws://127.0.0.1:8080/ws", token=TOKEN) as client:
        room = (await client.request("create_room", name="Ops", members=["bob"]))["room"]
        await client.request("new_message", room=room["id"], text="deploy done")
        async for frame in client.frames():      # what others send: messages, events, typing…
            ...

It imports neither Django nor the rest of the chat: only aiohttp. What it does, as the page's
`chat-client.js` does: authenticates on every connection; learns from the authenticate reply's
catalogue which actions may be sent again with the same uuid, and resends those after `timeout`,
`rate_limited` or a lost connection (after connecting and authenticating again, with backoff);
fails the others with `connection_lost`; `sync` pages through what was missed. Frames that answer
none of its requests (broadcasts, `event`, `resync`) wait in a bounded buffer for `frames()`, or go
to the handlers given to `on()`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import uuid as uuidlib
from typing import Any, AsyncIterator, Callable

import aiohttp

logger = logging.getLogger(__name__)

SUBPROTOCOL = "chat.v1"
# Errors after which a request the catalogue marks `retry` is sent again with its uuid.
RETRY_ERROR_CODES = frozenset({"timeout", "rate_limited"})
# Unsolicited frames kept for `frames()`; past it the oldest goes (counted in `dropped_frames`).
MAX_BUFFERED_FRAMES = 1000


class ChatError(Exception):
    """A refused request: `code` is the protocol's error_code, or the client's own
    (`connection_lost`, `closed`)."""

    def __init__(self, code: str, message: str = "", reply: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.reply = reply


class ChatClient:
    def __init__(self, url: str, *, token: str | None = None,
                 credential: Callable[[], Any] | None = None, session: aiohttp.ClientSession | None = None,
                 request_timeout: float = 30.0, max_retries: int = 5, backoff: tuple[float, float] = (0.5, 10.0),
                 max_buffered_frames: int = MAX_BUFFERED_FRAMES) -> None:
        """`token` (a REST framework token), or `credential`: a function (sync or async) returning
        the authenticate frame's credential fields, called before every connection (a fresh
        ticket, say: `{"ticket": …}`)."""
        if (token is None) == (credential is None):
            raise ValueError("give a token or a credential function")
        self.url = url
        self._credential = credential if credential is not None else (lambda: {"token": token})
        self._session = session
        self._own_session = session is None
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self._backoff = backoff
        self.user: dict[str, Any] | None = None
        self._retryable: set[str] = {"ping"}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._frames: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_buffered_frames)
        self._frame_arrived = asyncio.Event()
        self._handlers: dict[str, list[Callable[[dict[str, Any]], Any]]] = {}
        self.dropped_frames = 0
        self._closed = False

    async def __aenter__(self) -> "ChatClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def may_retry(self, action: str) -> bool:
        """Whether `action` is sent again with its uuid: `ping`, and what the catalogue marks `retry`."""
        return action in self._retryable

    async def connect(self) -> dict[str, Any]:
        """Open the WebSocket and authenticate; returns the authenticate reply."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, protocols=(SUBPROTOCOL,), autoping=True)
        self._reader = asyncio.create_task(self._read(self._ws), name="chat-client-reader")
        credential = self._credential()
        if asyncio.iscoroutine(credential):
            credential = await credential
        reply = await self._exchange({"uuid": uuidlib.uuid4().hex, "action": "authenticate", **credential})
        if reply.get("status") != "success":
            await self._ws.close()
            raise ChatError(reply.get("error_code", "server_error"), reply.get("error_message", ""), reply)
        self.user = reply.get("user")
        actions = reply.get("actions")
        if isinstance(actions, dict):
            self._retryable = {"ping"} | {name for name, rules in actions.items()
                                          if isinstance(rules, dict) and rules.get("retry") is True}
        self._connected.set()
        return reply

    async def request(self, action: str, *, uuid: str | None = None, **fields: Any) -> dict[str, Any]:
        """Send one frame and return its success reply; raise ChatError with its error code."""
        frame = {"uuid": uuid or uuidlib.uuid4().hex, "action": action, **fields}
        retries = 0
        while True:
            if self._closed:
                raise ChatError("closed", "the client was closed")
            await self._ensure_connected()
            try:
                reply = await self._exchange(frame)
            except ChatError as lost:
                if lost.code != "connection_lost" or not self.may_retry(action) or retries >= self.max_retries:
                    raise
                retries += 1
                continue  # connect again and resend, same uuid
            if reply.get("status") == "success":
                return reply
            code = reply.get("error_code", "server_error")
            if code in RETRY_ERROR_CODES and self.may_retry(action) and retries < self.max_retries:
                retries += 1
                await asyncio.sleep(self._pause(retries))
                continue
            raise ChatError(code, reply.get("error_message", ""), reply)

    async def sync(self, after: int, limit: int = 200) -> list[dict[str, Any]]:
        """Every message stored after id `after` in the user's rooms, oldest first (pages while `has_more`)."""
        messages: list[dict[str, Any]] = []
        while True:
            reply = await self.request("sync", after=after, limit=limit)
            messages += reply["messages"]
            if not reply.get("has_more") or not reply["messages"]:
                return messages
            after = reply["messages"][-1]["id"]

    async def changes(self, since: str, limit: int = 200) -> tuple[list[dict[str, Any]], str]:
        """Every change after cursor `since` ("": from now) as `sync`'s events, paging while
        `has_more`, and the cursor to resume from next time."""
        events: list[dict[str, Any]] = []
        while True:
            reply = await self.request("sync", since=since, limit=limit)
            events += reply["events"]
            since = reply["cursor"]
            if not reply.get("has_more"):
                return events, since

    def on(self, event: str, handler: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call `handler(data)` for each `{"action": "event", "event": event}` frame (a server-side
        publish) instead of buffering it; returns a function that removes the handler."""
        self._handlers.setdefault(event, []).append(handler)
        return lambda: self._handlers.get(event, []).remove(handler)

    async def frames(self) -> AsyncIterator[dict[str, Any]]:
        """The frames that answer none of this client's requests, as they come."""
        while True:
            while self._frames:
                yield self._frames.popleft()
            if self._closed:
                return
            self._frame_arrived.clear()
            await self._frame_arrived.wait()

    async def next_frame(self, predicate: Callable[[dict[str, Any]], bool] = lambda frame: True,
                         timeout: float = 15.0) -> dict[str, Any]:
        """The next unsolicited frame that matches; the others before it stay buffered."""

        async def find() -> dict[str, Any]:
            while True:
                for index, frame in enumerate(self._frames):
                    if predicate(frame):
                        del self._frames[index]
                        return frame
                self._frame_arrived.clear()
                await self._frame_arrived.wait()

        return await asyncio.wait_for(find(), timeout)

    async def close(self) -> None:
        self._closed = True
        self._connected.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()
        self._frame_arrived.set()

    # --- the connection ------------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._connected.is_set():
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._reconnect())
        await asyncio.shield(self._connecting)

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                await self.connect()
                return
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                attempt += 1
                pause = self._pause(attempt)
                logger.warning("chat client: connecting to %s failed (%s); again in %.1fs", self.url, exc, pause)
                await asyncio.sleep(pause)
        raise ChatError("closed", "the client was closed")

    def _pause(self, attempt: int) -> float:
        first, cap = self._backoff
        ceiling = min(cap, first * 2 ** (attempt - 1))
        return ceiling / 2 + random.random() * ceiling / 2

    async def _exchange(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send `frame` on the current connection and wait for its reply (by uuid and action)."""
        ws = self._ws
        if ws is None or ws.closed:
            self._connected.clear()
            raise ChatError("connection_lost", "not connected")
        key = f"{frame['action']}\x00{frame['uuid']}"
        if key in self._waiting:
            raise ChatError("duplicate_uuid", f"uuid {frame['uuid']} is in use")
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[key] = waiter
        try:
            await ws.send_str(json.dumps(frame))
            return await asyncio.wait_for(waiter, self.request_timeout)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ChatError("connection_lost", str(exc)) from exc
        except asyncio.TimeoutError:
            raise ChatError("timeout", f"no reply in {self.request_timeout:.0f}s") from None
        finally:
            self._waiting.pop(key, None)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(frame, dict):
                    self._received(frame)
        finally:
            if self._ws is ws:
                self._connected.clear()
            # Everything waiting on this connection learns it is gone: `request` decides what to resend.
            for key, waiter in list(self._waiting.items()):
                if not waiter.done():
                    waiter.set_exception(ChatError("connection_lost", f"closed ({ws.close_code})"))

    def _received(self, frame: dict[str, Any]) -> None:
        waiter = self._waiting.get(f"{frame.get('action')}\x00{frame.get('uuid')}")
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
            # A broadcast that answers our request (new_message) is ours, and others' news too: it
            # is not buffered a second time.
            return
        if frame.get("action") == "event" and frame.get("uuid") is None:
            handlers = self._handlers.get(frame.get("event"))
            if handlers:
                for handler in list(handlers):
                    try:
                        handler(frame.get("data"))
                    except Exception:
                        logger.exception("chat client: the handler of event %r failed", frame.get("event"))
                return
        if len(self._frames) == self._frames.maxlen:
            self.dropped_frames += 1
        self._frames.append(frame)
        self._frame_arrived.set()
