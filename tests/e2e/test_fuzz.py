"""Hostile input end to end: one connection sends thousands of random and malformed frames while
another member of the same room keeps chatting.

Every fuzz frame gets exactly one reply (matched by the unique uuid the test gave it, or counted
among the replies with a null or empty uuid when it had no usable one), no reply comes without a
request, and the fuzzing connection stays open. Frames the protocol answers with a close (not JSON,
not an object, binary, too big) go on throwaway connections, each of which must end with its
documented close code. The chatting member is unaffected: every message it sends succeeds and
reaches a third member on another gateway.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from chat.models import ChatMessage
from tests.e2e.client import Client
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FUZZ_FRAMES = 3000
SEED = 20261122
# Fuzz requests a worker answers that may wait at once: below the gateway's MAX_IN_FLIGHT (32),
# so that most reach a worker; a frame over it would still get its one `rate_limited` reply.
WINDOW = 24
BURST = 200
# How long the fuzzer waits for the replies it is owed, and the chatter for each of its own.
REPLY_TIMEOUT = 30
CHAT_TIMEOUT = 15
MAX_CHAT_MESSAGES = 400
# The gateway's WS_MAX_MESSAGE_SIZE is 64 KiB.
MAX_FUZZ_FRAME = 60_000

ACTIONS = ["authenticate", "select_room", "new_message", "list_rooms", "create_room", "add_members", "leave_room",
           "direct_message", "load_history", "mark_read", "typing", "who_is_online", "sync", "ping"]
KEYS = ["uuid", "action", "room", "text", "token", "members", "to", "before", "after", "limit", "message", "name"]
ERROR_CODES = {"invalid_message_format", "invalid_action", "invalid_token", "authentication_required",
               "invalid_room_id", "empty_text", "text_too_long", "invalid_user", "forbidden", "rate_limited", "timeout",
               "server_error"}
ODD_CHARACTERS = ["é", "\U0001f600", "\u202e", "\x00", "\n", " ", "\ud800", "\udfff", "\ufeff", "'", '"', "\\", "{"]

# The fields each action needs: a frame that has them (with odd values) gets past the format checks
# into the handler more often than a random one.
NEEDS = {"authenticate": ["token"], "select_room": ["room"], "new_message": ["room", "text"], "list_rooms": [],
         "create_room": ["name", "members"], "add_members": ["room", "members"], "leave_room": ["room"],
         "direct_message": ["to", "text"], "load_history": ["room", "before", "limit"],
         "mark_read": ["room", "message"], "typing": ["room"], "who_is_online": ["room"], "sync": ["after", "limit"],
         "ping": []}

CLOSE_UNSUPPORTED_DATA = 1003
# The WebSocket layer's own: a text frame that is not UTF-8 (RFC 6455 7.4.1; not in docs/protocol.md,
# which names 1009 but not this one), and one over WS_MAX_MESSAGE_SIZE.
CLOSE_INVALID_TEXT = 1007
CLOSE_MESSAGE_TOO_BIG = 1009


class FrameMaker:
    """Random frames of every kind the issue names, reproducible from a seed."""

    def __init__(self, rng: random.Random, room_id: str, usernames: list[str], own_token: str) -> None:
        self.rng = rng
        self.room_id = room_id
        self.usernames = usernames
        self.own_token = own_token

    def string(self, max_length: int = 30) -> str:
        rng = self.rng
        choice = rng.random()
        if choice < 0.3:
            return "".join(rng.choice(ODD_CHARACTERS) for _ in range(rng.randint(0, 8)))
        if choice < 0.5:
            return "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(0, max_length)))
        if choice < 0.6:
            return rng.choice("xé\U0001f600 ") * rng.choice([63, 64, 65, 150, 151, 200, 201, 4000, 4001, 9000])
        return "".join(rng.choice("abcdefghij 0123456789") for _ in range(rng.randint(0, max_length)))

    def number(self) -> Any:
        return self.rng.choice([0, 1, -1, 20, 100, 101, 500, 501, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64, -(2 ** 63),
                                10 ** 30, -(10 ** 30), 0.5, -0.0, 1e308, 3.14, self.rng.randint(-10 ** 6, 10 ** 6)])

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        kind = rng.randrange(8 if depth < 3 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice([True, False])
        if kind in (2, 3):
            return self.number()
        if kind in (4, 5):
            return self.string()
        if kind == 6:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {self.string(8): self.value(depth + 1) for _ in range(rng.randint(0, 4))}

    def room(self, leaving: bool = False) -> Any:
        rng = self.rng
        others = [uuidlib.uuid4().hex, "0" * 32, self.room_id[:31] + "g", self.room_id + " ", self.value()]
        if leaving:
            # Never the chatter's room in any of its spellings: the fuzzer stays a member of it,
            # so that its frames keep landing where the chatter talks.
            return rng.choice(others)
        return rng.choice([self.room_id, self.room_id, self.room_id, str(uuidlib.UUID(self.room_id)),
                           self.room_id.upper(), "{" + self.room_id + "}", *others])

    def field(self, key: str, action: Any = None) -> Any:
        rng = self.rng
        if rng.random() < 0.2:
            return self.value()
        if key == "room":
            return self.room(leaving=action == "leave_room")
        if key in ("text", "name"):
            return rng.choice(["hello", "hello", " ", "", self.string(50)])
        if key == "token":
            return rng.choice([self.own_token, "", "nope", self.own_token + "\x00", self.string(200)])
        if key == "members":
            return [rng.choice([*self.usernames, "nobody", "", self.string(10)]) for _ in range(rng.randint(0, 4))]
        if key == "to":
            return rng.choice([*self.usernames, "nobody", self.string(10)])
        if key in ("before", "after", "message"):
            return rng.choice([None, rng.randint(0, 5000), self.number()])
        if key == "limit":
            return rng.choice([None, rng.randint(1, 100), self.number()])
        return self.number()

    def uuid(self, n: int) -> Any:
        """A unique usable uuid mostly; else one too long (echoed all the same), empty, or no string at all."""
        rng = self.rng
        choice = rng.random()
        if choice < 0.75:
            tail = self.string(20) if rng.random() < 0.3 else uuidlib.uuid4().hex
            return f"fz{n}:{tail}"[:64]
        if choice < 0.82:
            return f"fz{n}:" + "x" * 70
        if choice < 0.86:
            return ""
        value = self.value()
        while isinstance(value, str):  # a string here would not be unique
            value = self.value()
        return value

    def frame(self, n: int) -> dict[str, Any]:
        rng = self.rng
        frame: dict[str, Any] = {}
        if rng.random() < 0.95:
            frame["uuid"] = self.uuid(n)
        choice = rng.random()
        if choice < 0.8:
            frame["action"] = rng.choice(ACTIONS)
        elif choice < 0.95:
            frame["action"] = rng.choice(["", "PING", "drop_table", "__init__", "ping ", self.string(), self.value()])
        action = frame.get("action")
        keys = set(rng.sample(KEYS[2:], rng.randint(0, 3)))
        if isinstance(action, str) and action in NEEDS and rng.random() < 0.8:
            keys.update(NEEDS[action])
        for key in sorted(keys):
            frame[key] = self.field(key, action)
        if rng.random() < 0.05:
            # The gateway's own keys: a client's values must change nothing.
            frame[rng.choice(["session_data", "request_id", "reply_to", "send_to"])] = rng.choice(
                [{"user_pk": 1}, "gw:1", None, [1, 2, 3], self.value()])
        if rng.random() < 0.1:
            frame[self.string(10)] = self.value()
        return frame


def usable(uuid: Any) -> bool:
    return isinstance(uuid, str) and uuid != ""


@dataclass
class FuzzLedger:
    """What the fuzzing connection sent and what came back, by uuid."""

    expected: dict[str, str] = field(default_factory=dict)  # uuid -> action ("" if not a string)
    replies: collections.Counter = field(default_factory=collections.Counter)
    # Sent frames with a usable uuid not answered yet; typing succeeds in silence (the typist
    # gets nothing), so it is never owed a reply.
    owed: int = 0
    null_sent: int = 0
    null_replies: int = 0
    empty_sent: int = 0
    empty_replies: int = 0
    codes: collections.Counter = field(default_factory=collections.Counter)
    strays: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[dict[str, Any]] = field(default_factory=list)
    chat_broadcasts: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def sent(self, uuid: Any, action: Any) -> None:
        if usable(uuid):
            assert uuid not in self.expected
            self.expected[uuid] = action if isinstance(action, str) else ""
            self.owed += self.expected[uuid] != "typing"
        elif uuid == "":
            self.empty_sent += 1
        else:
            self.null_sent += 1

    def all_answered(self) -> bool:
        return not self.owed and self.null_replies >= self.null_sent and self.empty_replies >= self.empty_sent

    async def wait_until(self, done, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done():
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"{self.owed} fuzz frames unanswered after {timeout}s: {self.codes}"
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), remaining)
            except TimeoutError:
                pass


def well_formed(reply: Any) -> bool:
    if not isinstance(reply, dict) or reply.get("status") not in ("success", "error"):
        return False
    if not {"uuid", "action"} <= set(reply):
        return False
    if reply["status"] == "error":
        return (reply.get("error_code") in ERROR_CODES and reply["error_code"] != "server_error"
                and isinstance(reply.get("error_message"), str) and bool(reply["error_message"]))
    return True


async def read_fuzz_replies(client: Client, ledger: FuzzLedger) -> None:
    while True:
        message = await client.ws.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            ledger.strays.append({"closed": client.ws.close_code, "type": str(message.type)})
            ledger.progress.set()
            return
        reply = json.loads(message.data)
        uuid = reply.get("uuid") if isinstance(reply, dict) else None
        if isinstance(uuid, str) and uuid in ledger.expected:
            ledger.replies[uuid] += 1
            if ledger.replies[uuid] == 1 and ledger.expected[uuid] != "typing":
                ledger.owed -= 1
        elif isinstance(uuid, str) and uuid.startswith("chat-"):
            ledger.chat_broadcasts += 1  # the chatter's message: this connection is a member too
            continue
        elif uuid is None:
            ledger.null_replies += 1
        elif uuid == "":
            ledger.empty_replies += 1
        else:
            ledger.strays.append(reply)
            continue
        if not well_formed(reply):
            ledger.malformed.append(reply)
        ledger.codes[reply.get("error_code", "success")] += 1
        ledger.progress.set()


async def fuzz(client: Client, maker: FrameMaker, ledger: FuzzLedger) -> None:
    for n in range(FUZZ_FRAMES):
        text = json.dumps(maker.frame(n))  # lone surrogates go as \ud800 escapes
        while len(text.encode()) > MAX_FUZZ_FRAME:  # a bigger one closes with 1009: its own case below
            text = json.dumps(maker.frame(n))
        frame = json.loads(text)
        ledger.sent(frame.get("uuid"), frame.get("action"))
        await client.ws.send_str(text)
        # The last frames go in one burst, past MAX_IN_FLIGHT: `rate_limited`, one reply each still.
        if ledger.owed >= WINDOW and n < FUZZ_FRAMES - BURST:
            await ledger.wait_until(lambda: ledger.owed < WINDOW, REPLY_TIMEOUT)


async def chat(client: Client, room_id: str, stop: asyncio.Event, sent: dict[str, int]) -> None:
    """Send messages one after another until the fuzzing is over; each must succeed."""
    n = 0
    while not stop.is_set() and n < MAX_CHAT_MESSAGES:
        reply = await client.request("new_message", CHAT_TIMEOUT, uuid=f"chat-{n}-{uuidlib.uuid4().hex[:8]}",
                                     room=room_id, text=f"chat message {n}")
        assert reply["status"] == "success", reply
        assert reply["message"]["text"] == f"chat message {n}"
        sent[reply["uuid"]] = reply["message"]["id"]
        n += 1
        await asyncio.sleep(0.02)  # a person's pace, not a flood


async def observe(client: Client, username: str, seen: dict[str, int], other_uuids: set[str]) -> None:
    """Record the chatter's messages as a third member receives them, and the uuids of the rest."""
    while True:
        message = await client.ws.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            return
        frame = json.loads(message.data)
        if frame.get("action") == "new_message" and frame.get("status") == "success" \
                and frame["message"]["user"]["username"] == username:
            seen[frame["uuid"]] = frame["message"]["id"]
        else:
            other_uuids.add(frame.get("uuid"))


# Frames the protocol answers with a close, each on a connection of its own, with the code it must get.
CLOSING_FRAMES: list[tuple[str, Any, int]] = [
    ("text", "not json", CLOSE_UNSUPPORTED_DATA),
    ("text", "", CLOSE_UNSUPPORTED_DATA),
    ("text", "{", CLOSE_UNSUPPORTED_DATA),
    ("text", "{'uuid': 'single quotes'}", CLOSE_UNSUPPORTED_DATA),
    ("text", '{"uuid": "u1", "action": "ping"} trailing', CLOSE_UNSUPPORTED_DATA),
    ("text", "[]", CLOSE_UNSUPPORTED_DATA),
    ("text", '[{"uuid": "u1", "action": "ping"}]', CLOSE_UNSUPPORTED_DATA),
    ("text", "42", CLOSE_UNSUPPORTED_DATA),
    ("text", '"a string"', CLOSE_UNSUPPORTED_DATA),
    ("text", "null", CLOSE_UNSUPPORTED_DATA),
    ("text", "true", CLOSE_UNSUPPORTED_DATA),
    ("text", '{"uuid": "u1", "action": "sync", "after": NaN}', CLOSE_UNSUPPORTED_DATA),
    ("text", '{"uuid": "u1", "action": "sync", "after": Infinity}', CLOSE_UNSUPPORTED_DATA),
    ("text", '{"uuid": "u1", "action": "sync", "after": 1e400}', CLOSE_UNSUPPORTED_DATA),
    ("text", '{"uuid": "u1", "action": "sync", "after": ' + "9" * 5000 + "}", CLOSE_UNSUPPORTED_DATA),
    ("text", '{"uuid": "u1", "x": ' + "[" * 20_000 + "]" * 20_000 + "}", CLOSE_UNSUPPORTED_DATA),
    ("text", '{"uuid": "u1", "x": ' + '{"a":' * 5_000 + "1" + "}" * 5_000 + "}", CLOSE_UNSUPPORTED_DATA),
    ("binary", b'{"uuid": "u1", "action": "ping"}', CLOSE_UNSUPPORTED_DATA),
    ("binary", b"", CLOSE_UNSUPPORTED_DATA),
    ("binary", bytes(range(256)), CLOSE_UNSUPPORTED_DATA),
    ("raw text", b'{"uuid": "\xff\xfe", "action": "ping"}', CLOSE_INVALID_TEXT),
    ("raw text", b'{"uuid": "\xed\xa0\x80", "action": "ping"}', CLOSE_INVALID_TEXT),  # a surrogate, UTF-8 encoded
    ("text", json.dumps({"uuid": "u1", "action": "new_message", "text": "x" * 70_000}), CLOSE_MESSAGE_TOO_BIG),
]


async def closed_with(session: aiohttp.ClientSession, url: str, kind: str, payload: Any, rng: random.Random) -> int:
    client = await connect(session, url)
    # Sometimes after a good frame, so the close is not only ever the first thing that happens.
    if rng.random() < 0.5:
        assert (await client.request("ping", 10))["status"] == "success"
    if kind == "binary":
        await client.ws.send_bytes(payload)
    elif kind == "raw text":
        await client.ws.send_frame(payload, aiohttp.WSMsgType.TEXT)
    else:
        await client.ws.send_str(payload)
    return await client.expect_close(10)


def test_thousands_of_hostile_frames_get_one_reply_each_and_leave_the_room_chatting(e2e):
    data = e2e.fixtures(users=3, rooms=1, room_size=3)
    room_id = data["rooms"][0]["id"]
    fuzzer, chatter, observer = data["users"]
    proc, port = e2e.stack.start_gateway(processes=1, name="gateway-fuzz", extra_env={
        # No rate limit to speak of: the fuzz frames reach the workers, bounded by MAX_IN_FLIGHT.
        "RATE_LIMIT": "100000", "RATE_LIMIT_BURST": "100000",
        # Far above any real wait, so that `timeout` here would mean a lost reply, not a slow one.
        "REQUEST_TIMEOUT": "30",
    })
    url = f"http://127.0.0.1:{port}/ws"
    rng = random.Random(SEED)
    maker = FrameMaker(rng, room_id, [user["username"] for user in data["users"]], fuzzer["token"])
    ledger = FuzzLedger()
    chat_sent: dict[str, int] = {}
    observed: dict[str, int] = {}

    async def scenario(session: aiohttp.ClientSession) -> list[tuple[str, int, int]]:
        fuzz_client = await connect(session, url, fuzzer)
        chat_client = await connect(session, url, chatter)
        observer_client = await connect(session, e2e.gateway_b, observer)
        observer_uuids: set[str] = set()
        reader = asyncio.create_task(read_fuzz_replies(fuzz_client, ledger))
        watcher = asyncio.create_task(observe(observer_client, chatter["username"], observed, observer_uuids))
        stop_chat = asyncio.Event()
        chatting = asyncio.create_task(chat(chat_client, room_id, stop_chat, chat_sent))
        close_rng = random.Random(SEED + 1)
        closing = asyncio.gather(*(closed_with(session, url, kind, payload, close_rng)
                                   for kind, payload, _ in CLOSING_FRAMES))
        try:
            await fuzz(fuzz_client, maker, ledger)
            codes = await closing
            await ledger.wait_until(ledger.all_answered, REPLY_TIMEOUT)
            stop_chat.set()
            await chatting
            # A round trip through the workers after the last fuzz frame (a few, as there are
            # several workers): a second reply to any fuzz frame would have come before these.
            for _ in range(4):
                barrier = f"barrier-{uuidlib.uuid4().hex}"
                ledger.sent(barrier, "list_rooms")
                await fuzz_client.ws.send_str(json.dumps({"uuid": barrier, "action": "list_rooms"}))
            await ledger.wait_until(ledger.all_answered, CHAT_TIMEOUT)
            assert not fuzz_client.ws.closed, fuzz_client.ws.close_code
            assert (await chat_client.request("ping", CHAT_TIMEOUT))["status"] == "success"
            # The observer's own round trip comes back over the same Redis subscription as the
            # chatter's broadcasts, so after every one of them.
            barrier = f"barrier-{uuidlib.uuid4().hex}"
            await observer_client.send({"uuid": barrier, "action": "list_rooms"})
            deadline = asyncio.get_running_loop().time() + CHAT_TIMEOUT
            while barrier not in observer_uuids:
                assert asyncio.get_running_loop().time() < deadline, "the observer's barrier never came back"
                await asyncio.sleep(0.01)
            return [(kind, code, expected) for (kind, _, expected), code in zip(CLOSING_FRAMES, codes)]
        finally:
            stop_chat.set()
            for task in (reader, watcher, chatting):
                task.cancel()
            await asyncio.gather(reader, watcher, chatting, closing, return_exceptions=True)

    try:
        closes = run(scenario)
    finally:
        e2e.stack.stop_process(proc)

    # Exactly one reply per frame with a usable uuid (typing: none on success), none without a request.
    twice = {uuid: count for uuid, count in ledger.replies.items() if count > 1}
    unanswered = [uuid for uuid, action in ledger.expected.items() if action != "typing" and not ledger.replies[uuid]]
    assert not twice, twice
    assert not unanswered, unanswered[:10]
    assert (ledger.null_replies, ledger.empty_replies) == (ledger.null_sent, ledger.empty_sent)
    assert not ledger.strays, ledger.strays[:5]
    assert not ledger.malformed, ledger.malformed[:5]
    assert ledger.codes["server_error"] == 0 and ledger.codes["timeout"] == 0, ledger.codes
    # The fuzz got past the gateway's checks to the workers' handlers, not only refused at the door.
    assert ledger.codes["success"] > 200, ledger.codes
    # The closes are the documented ones.
    assert [(kind, code) for kind, code, _ in closes] == [(kind, expected) for kind, _, expected in closes]

    # The chatter was unaffected: every message stored once, and it reached the other member.
    assert len(chat_sent) >= 20
    assert observed == chat_sent
    stored = e2e.orm(lambda: collections.Counter(ChatMessage.objects.values_list("user__username", flat=True)))
    assert stored[chatter["username"]] == len(chat_sent)
    assert stored[observer["username"]] == 0  # a client's session_data never made it another user
    assert "Traceback" not in e2e.stack.log("gateway-fuzz")
