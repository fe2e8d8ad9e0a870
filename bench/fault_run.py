"""A randomized fault run: 200 chatting clients against the real stack while a seeded schedule
kills workers, restarts gateways, restarts Redis, freezes it and severs its connections, then the invariants of
bench/fault_invariants.py are checked over the clients' logs and the database.

    python -m bench.fault_run --seed 1 --duration 120 --clients 200

Every part reaches Redis through bench/tcp_proxy.py, so that a freeze is a hang (bytes stop,
connections stay open), not a refusal. Clients behave as the chat page does (chat-client.js):
reconnect with backoff and jitter, retry a request left without a success with the same uuid,
`sync` from their newest message id after each reconnect and on a `resync` frame. Exits 1 on a
violation. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import fault_invariants as inv
from scripts.stack import ROOT, Stack, StackError, http_ok, subscribed, wait_for
from bench.tcp_proxy import ProxyThread

logger = logging.getLogger("fault_run")

# redis_sever: the proxy abandons every open connection to Redis without telling either side (a
# partition that outlives the connections); the subscriptions' probes notice it (docs/reliability.md).
FAULT_KINDS = ("worker_kill", "gateway_restart", "redis_restart", "redis_freeze", "redis_sever")
# The quiet time before each fault, drawn from this range: the stack recovers between faults.
GAP = (6.0, 12.0)
FREEZE_SECONDS = (2.0, 5.0)
# The gateway's REQUEST_TIMEOUT in the run: a request without a worker's answer gets `timeout` by then.
REQUEST_TIMEOUT = 5.0
# A request with no reply this long is a violation: the client closes the connection itself
# (the page's heartbeat would) and retries on the next one.
REPLY_DEADLINE = REQUEST_TIMEOUT + 25.0
# Reconnect backoff, as chat-client.js: 0.5 s doubling to 10 s, "equal jitter".
BACKOFF_INITIAL, BACKOFF_MAX = 0.5, 10.0
# Messages a client has sent and not yet seen acknowledged: it sends no new one beyond this.
MAX_PENDING = 4
# Sends of one uuid before the client gives it up (counted and reported, not a violation).
MAX_ATTEMPTS = 40
SYNC_PAGE = 200
FINAL_SYNC_PAGE = 500
# Pages one catch-up may take (a run stores far fewer messages than this many pages hold).
MAX_SYNC_PAGES = 1000
# Frames logged per client: a run that would log more stops logging and reports it.
MAX_EVENTS = 100_000
# How long the quiet period after the faults may take for every client to settle.
SETTLE_TIMEOUT = 120.0
# How long any one stack operation (start a worker, a gateway, Redis) may take.
STACK_TIMEOUT = 60.0
# Error codes after which a request is sent again with its uuid (as chat-client.js).
RETRY_ERROR_CODES = frozenset({"timeout", "rate_limited"})

RETRYABLE = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


@dataclass
class RunConfig:
    seed: int = 1
    duration: float = 120.0
    clients: int = 200
    workers: int = 3
    gateways: int = 2
    # Mean seconds between two messages of one client.
    message_interval: float = 5.0
    room_size: int = 8
    kinds: tuple[str, ...] = FAULT_KINDS
    # How long a freeze lasts, drawn from this range.
    freeze: tuple[float, float] = FREEZE_SECONDS
    database_url: str | None = None
    log_dir: Path | None = None


@dataclass(frozen=True)
class Fault:
    kind: str
    gap: float  # quiet seconds before it
    target: int  # which worker or gateway
    seconds: float = 0.0  # how long a freeze lasts


def fault_schedule(seed: int, workers: int, gateways: int, kinds: tuple[str, ...] = FAULT_KINDS,
                   freeze: tuple[float, float] = FREEZE_SECONDS) -> Iterator[Fault]:
    """The faults in the order they come: each of `kinds` once per round, the rounds shuffled,
    spaced by random gaps. Only the arguments decide it; the run takes faults from it until its
    duration is over, and always the whole first round, so that every kind is injected."""
    rng = random.Random(seed)
    while True:
        order = list(kinds)
        rng.shuffle(order)
        for kind in order:
            gap = rng.uniform(*GAP)
            seconds = rng.uniform(*freeze) if kind == "redis_freeze" else 0.0
            target = rng.randrange(workers if kind == "worker_kill" else gateways)
            yield Fault(kind, gap, target, seconds)


def backoff_delay(attempt: int, rng: random.Random) -> float:
    ceiling = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** attempt)
    return ceiling / 2 + rng.random() * ceiling / 2


def compact(frame: dict[str, Any]) -> dict[str, Any]:
    """What the invariants read of a received frame (ids, rooms, authors, statuses), without texts."""
    kept = {key: frame[key] for key in ("uuid", "action", "status", "error_code", "room", "has_more") if key in frame}
    if isinstance(frame.get("message"), dict):
        message = frame["message"]
        kept["message"] = {"id": message.get("id"), "room": message.get("room"), "user": message.get("user")}
    for key in ("messages", "room_messages"):
        if isinstance(frame.get(key), list):
            kept[key] = [{"id": m.get("id"), "room": m.get("room")} for m in frame[key] if isinstance(m, dict)]
    return kept


class ConnectionEnded(Exception):
    """The connection a request was sent on ended before its reply."""


class ChatClient:
    """One user's client, as the chat page behaves; every frame it sends or receives is logged."""

    def __init__(self, client_id: str, user: dict[str, Any], rooms: list[str], gateways: list[str], seed: int,
                 message_interval: float) -> None:
        self.message_interval = message_interval
        self.log = inv.ClientLog(client_id, user["username"], frozenset(inv.room_key(room) for room in rooms))
        self.token = user["token"]
        self.rooms = rooms
        self.gateways = gateways
        self.rng = random.Random(f"{seed}-{client_id}")
        self.sequence = 0
        self.conn = 0
        self.newest_id = 0
        # new_message frames sent and not yet acknowledged, by uuid; the attempts each had.
        self.pending: dict[str, dict[str, Any]] = {}
        self.attempts: Counter[str] = Counter()
        # uuid → [connection, frames sent on it not answered yet, when the first was sent].
        self.in_flight: dict[str, list[Any]] = {}
        # Connections this client closed itself (its watchdog, or the end of the run).
        self.closed_by_client: set[int] = set()
        self.retry_at: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.acked: set[str] = set()
        self.given_up: dict[str, str] = {}
        self.sent_messages = 0
        self.reconnects = 0
        self.truncated = False
        self.crashed: str | None = None
        self.sending = True
        self.resync_requested = False
        self.final_requested = False
        self.finished = asyncio.Event()
        self.ready = asyncio.Event()  # authenticated and caught up on the current connection
        self.wakeup = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    # --- logging -----------------------------------------------------------------------------

    def record(self, event: inv.Event) -> None:
        if len(self.log.events) >= MAX_EVENTS:
            self.truncated = True
            return
        self.log.events.append(event)

    def new_uuid(self) -> str:
        self.sequence += 1
        return f"{self.log.client_id}-{self.sequence}"

    # --- the connection loop -----------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession) -> None:
        try:
            await self.connect_loop(session)
        except Exception as exc:
            # A bug of the client's own (or a reply it cannot read): reported as a violation.
            logger.exception("%s: client failed", self.log.client_id)
            self.crashed = repr(exc)

    async def connect_loop(self, session: aiohttp.ClientSession) -> None:
        attempt = 0
        while not self.finished.is_set():
            url = self.rng.choice(self.gateways)
            try:
                ws = await session.ws_connect(url, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_close=10))
            except RETRYABLE:
                await asyncio.sleep(backoff_delay(attempt, self.rng))
                attempt += 1
                continue
            self.conn += 1
            conn = self.conn
            self.ws = ws
            self.record(inv.Event("open", conn))
            caught_up = await self.serve(ws, conn)
            self.ws = None
            self.ready.clear()
            if self.finished.is_set():
                break
            self.reconnects += 1
            attempt = 0 if caught_up else attempt + 1
            await asyncio.sleep(backoff_delay(attempt, self.rng))

    async def serve(self, ws: aiohttp.ClientWebSocketResponse, conn: int) -> bool:
        """Run one connection to its end; whether it was authenticated and caught up."""
        reader = asyncio.create_task(self.read(ws, conn))
        driver = asyncio.create_task(self.drive(ws, conn))
        caught_up = False
        try:
            done, _ = await asyncio.wait({reader, driver}, return_when=asyncio.FIRST_COMPLETED)
            if driver in done:
                error = driver.exception()
                if error is None:
                    caught_up = driver.result()
                elif not isinstance(error, (ConnectionEnded, *RETRYABLE)):
                    raise error
            if not ws.closed:
                # Leaving a connection: what was sent on it gets its reply first (the reader goes
                # on), up to REPLY_DEADLINE after it was sent; what gets none by then is unanswered.
                await self.wait_answered(conn, ws)
                self.closed_by_client.add(conn)
                await ws.close(code=1000 if self.finished.is_set() else 4000)
            await reader
        finally:
            driver.cancel()
            reader.cancel()
            await asyncio.gather(driver, reader, return_exceptions=True)
            # What was in flight on this connection is retried on the next one.
            for uuid, (sent_on, _, _) in list(self.in_flight.items()):
                if sent_on == conn:
                    del self.in_flight[uuid]
            for future in self.waiters.values():
                if not future.done():
                    future.set_exception(ConnectionEnded())
            self.waiters.clear()
        return caught_up or self.ready.is_set()

    async def wait_answered(self, conn: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            sent = [at for sent_on, _, at in self.in_flight.values() if sent_on == conn]
            if not sent or time.monotonic() > min(sent) + REPLY_DEADLINE:
                return
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def read(self, ws: aiohttp.ClientWebSocketResponse, conn: int) -> None:
        while True:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                try:
                    frame = json.loads(message.data)
                except ValueError:
                    frame = None
                if not isinstance(frame, dict):
                    # Not the protocol's: logged as a frame without uuid, which the checker reports.
                    self.record(inv.Event("recv", conn, {"not_an_object": message.data[:200]}))
                    continue
                self.record(inv.Event("recv", conn, compact(frame)))
                self.on_frame(frame, conn)
                continue
            if message.type == aiohttp.WSMsgType.CLOSE:
                # The code in the server's Close frame (tests/e2e/client.py says why not ws.close_code).
                self.record(inv.Event("close", conn, code=message.data, by_server=True))
            else:
                self.record(inv.Event("close", conn, code=ws.close_code or 1006,
                                      by_server=conn not in self.closed_by_client))
            self.wakeup.set()
            return

    def on_frame(self, frame: dict[str, Any], conn: int) -> None:
        uuid = frame.get("uuid")
        if frame.get("status") == "success":
            for message in inv.messages_in(frame):
                if isinstance(message.get("id"), int):
                    self.newest_id = max(self.newest_id, message["id"])
        if uuid is None:
            if frame.get("action") == "resync":
                self.resync_requested = True
                self.wakeup.set()
            return
        mine = inv.uuid_owner(str(uuid)) == self.log.client_id
        flight = self.in_flight.get(uuid) if mine else None
        if flight is not None and flight[0] == conn:
            flight[1] -= 1
            if flight[1] <= 0:
                del self.in_flight[uuid]
                self.wakeup.set()
        waiter = self.waiters.pop(uuid, None) if mine else None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
            return
        if not mine or frame.get("action") != "new_message" or uuid not in self.pending:
            return
        if frame.get("status") == "success":
            del self.pending[uuid]
            self.retry_at.pop(uuid, None)
            self.acked.add(uuid)
        elif frame.get("error_code") in RETRY_ERROR_CODES:
            self.retry_at[uuid] = time.monotonic() + backoff_delay(min(self.attempts[uuid], 4), self.rng)
        else:
            self.give_up(uuid, f"error {frame.get('error_code')}")
        self.wakeup.set()

    def give_up(self, uuid: str, why: str) -> None:
        self.pending.pop(uuid, None)
        self.retry_at.pop(uuid, None)
        self.given_up[uuid] = why
        logger.warning("%s: gave up %s: %s", self.log.client_id, uuid, why)

    async def send(self, ws: aiohttp.ClientWebSocketResponse, conn: int, frame: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(frame))
        self.record(inv.Event("sent", conn, {"uuid": frame["uuid"], "action": frame["action"]}))
        flight = self.in_flight.get(frame["uuid"])
        if flight is not None and flight[0] == conn:
            flight[1] += 1
        else:
            self.in_flight[frame["uuid"]] = [conn, 1, time.monotonic()]

    async def request(self, ws: aiohttp.ClientWebSocketResponse, conn: int, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame and wait for its reply; a `timeout` or `rate_limited` is retried with the
        same uuid after a pause, on this connection."""
        for attempt in range(MAX_ATTEMPTS):
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self.waiters[frame["uuid"]] = future
            await self.send(ws, conn, frame)
            try:
                reply = await asyncio.wait_for(future, REPLY_DEADLINE)
            except asyncio.TimeoutError:
                logger.error("%s: no reply to %s within %.0f s on conn %d", self.log.client_id, frame["uuid"],
                             REPLY_DEADLINE, conn)
                raise ConnectionEnded() from None
            if reply.get("status") == "success" or reply.get("error_code") not in RETRY_ERROR_CODES:
                return reply
            await asyncio.sleep(backoff_delay(min(attempt, 4), self.rng))
        raise ConnectionEnded()

    async def sync(self, ws: aiohttp.ClientWebSocketResponse, conn: int, after: int, page: int) -> list[dict[str, Any]]:
        """Every message after `after`, paging while has_more."""
        messages: list[dict[str, Any]] = []
        for _ in range(MAX_SYNC_PAGES):
            reply = await self.request(ws, conn, {"uuid": self.new_uuid(), "action": "sync", "after": after,
                                                  "limit": page})
            if reply.get("status") != "success":
                logger.error("%s: sync refused: %s", self.log.client_id, reply)
                raise ConnectionEnded()
            messages.extend(reply["messages"])
            if not reply.get("has_more") or not reply["messages"]:
                return messages
            after = max(message["id"] for message in reply["messages"])
        logger.error("%s: sync still has more after %d pages", self.log.client_id, MAX_SYNC_PAGES)
        raise ConnectionEnded()

    async def drive(self, ws: aiohttp.ClientWebSocketResponse, conn: int) -> bool:
        auth = await self.request(ws, conn, {"uuid": self.new_uuid(), "action": "authenticate", "token": self.token})
        if auth.get("status") != "success":
            logger.error("%s: authentication refused: %s", self.log.client_id, auth)
            return False
        # Retried messages first (same uuids), then the catch-up from the newest id seen.
        for uuid, frame in list(self.pending.items()):
            if uuid not in self.in_flight:
                self.retry_at.pop(uuid, None)
                await self.send_message(ws, conn, frame)
        await self.sync(ws, conn, self.newest_id, SYNC_PAGE)
        self.ready.set()
        next_message = time.monotonic() + self.rng.expovariate(1 / self.message_interval)
        while True:
            now = time.monotonic()
            if self.final_requested:
                self.log.final_sync = [{"id": m["id"], "room": m["room"]}
                                       for m in await self.sync(ws, conn, 0, FINAL_SYNC_PAGE)]
                self.final_requested = False
            if self.resync_requested:
                self.resync_requested = False
                await self.sync(ws, conn, self.newest_id, SYNC_PAGE)
            for uuid, due in list(self.retry_at.items()):
                if due <= now and uuid in self.pending:
                    del self.retry_at[uuid]
                    await self.send_message(ws, conn, self.pending[uuid])
            if self.sending and now >= next_message:
                next_message = now + self.rng.expovariate(1 / self.message_interval)
                if len(self.pending) < MAX_PENDING:
                    room = self.rng.choice(self.rooms)
                    uuid = self.new_uuid()
                    frame = {"uuid": uuid, "action": "new_message", "room": room, "text": f"{uuid} says hi"}
                    self.pending[uuid] = frame
                    self.sent_messages += 1
                    await self.send_message(ws, conn, frame)
            stale = [uuid for uuid, (sent_on, _, at) in self.in_flight.items()
                     if sent_on == conn and now - at > REPLY_DEADLINE]
            if stale:
                logger.error("%s: no reply to %s within %.0f s on conn %d", self.log.client_id, stale, REPLY_DEADLINE,
                             conn)
                return True
            self.wakeup.clear()
            timeout = max(0.05, min([1.0, next_message - now, *(due - now for due in self.retry_at.values())]))
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            if ws.closed:
                return True

    async def send_message(self, ws: aiohttp.ClientWebSocketResponse, conn: int, frame: dict[str, Any]) -> None:
        uuid = frame["uuid"]
        if self.attempts[uuid] >= MAX_ATTEMPTS:
            self.give_up(uuid, f"{MAX_ATTEMPTS} attempts")
            return
        self.attempts[uuid] += 1
        await self.send(ws, conn, frame)

    @property
    def settled(self) -> bool:
        return self.ready.is_set() and not self.pending and not self.in_flight

    async def close(self) -> None:
        self.finished.set()
        ws = self.ws
        if ws is not None and not ws.closed:
            await self.wait_answered(self.conn, ws)
            self.closed_by_client.add(self.conn)
            await ws.close()


# --- the stack and the schedule ----------------------------------------------------------------

# Prints the stored messages of the given rooms as JSON: (id, sender, room, client uuid).
STORED_QUERY = """
import json, sys
from chat.models import ChatMessage
rooms = json.load(sys.stdin)
rows = ChatMessage.objects.filter(room_id__in=rooms).values_list("id", "user__username", "room_id", "client_uuid")
print(json.dumps([[pk, username, room.hex, client_uuid] for pk, username, room, client_uuid in rows]))
"""


@dataclass
class Report:
    seed: int
    duration: float
    clients: int
    faults: dict[str, int]
    sent: int
    acknowledged: int
    stored: int
    given_up: int
    reconnects: int
    resyncs: int
    closes: dict[int, int]
    errors: dict[str, int]
    violations: list[inv.Violation] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return inv.tally(self.violations)

    def summary(self) -> str:
        counts = self.counts
        lines = [
            f"seed {self.seed}, {self.duration:.0f} s of faults ({self.elapsed:.0f} s in all, start-up aside), "
            f"{self.clients} clients",
            "faults: " + ", ".join(f"{kind} {count}" for kind, count in self.faults.items()),
            f"messages: {self.sent} sent, {self.acknowledged} acknowledged, {self.stored} stored, "
            f"{self.given_up} given up",
            f"clients: {self.reconnects} reconnects, {self.resyncs} resync frames, closes by code "
            + (", ".join(f"{code}: {n}" for code, n in sorted(self.closes.items())) or "none")
            + ", error replies " + (", ".join(f"{code}: {n}" for code, n in sorted(self.errors.items())) or "none"),
            "invariants: " + ", ".join(f"{kind} {n}" for kind, n in counts.items()),
        ]
        lines += [f"  {v.kind} ({v.client}): {v.detail}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  … and {len(self.violations) - 50} more")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "duration": self.duration, "clients": self.clients, "faults": self.faults,
                "sent": self.sent, "acknowledged": self.acknowledged, "stored": self.stored,
                "given_up": self.given_up, "reconnects": self.reconnects, "resyncs": self.resyncs,
                "closes": {str(code): n for code, n in self.closes.items()}, "errors": self.errors, "violations": self.counts}


class FaultStack:
    """The stack of a run: Redis behind the proxy, workers on fixed topics, one-process gateways
    on fixed ports; each part can be broken and brought back."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="fault-run-"))
        self.tag = f"fault{secrets.token_hex(3)}"
        database_url = config.database_url or f"sqlite:///{log_dir / 'fault-run.sqlite3'}"
        self.stack = Stack.create(log_dir=log_dir, DATABASE_URL=database_url,
                                  WORKER_RESPONSE_TOPIC=f"{self.tag}_response", REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
                                  AUTH_TIMEOUT="30", LOG_LEVEL="INFO")
        # Our own Redis, always: we stop it and freeze it.
        self.stack.env.pop("REDIS_URL", None)
        self.stack.env.setdefault("DEBUG", "1")
        self.proxy: ProxyThread | None = None
        self.topics = [f"{self.tag}_worker_{n}" for n in range(1, config.workers + 1)]
        self.workers: list[subprocess.Popen] = []
        self.gateway_ports: list[int] = []
        self.gateways: list[subprocess.Popen | None] = []
        self.starts = Counter()

    def start(self) -> dict[str, Any]:
        """Start everything; return the fixture (users with tokens, rooms with members)."""
        stack, config = self.stack, self.config
        if not config.database_url:
            stack.manage("migrate", "--noinput")
        rooms = max(1, config.clients * 2 // config.room_size)
        fixture = json.loads(stack.manage("chat_fixtures", "--users", str(config.clients), "--rooms", str(rooms),
                                          "--room-size", str(config.room_size), "--seed", str(config.seed)).stdout)
        stack.start_redis()
        self.proxy = ProxyThread(stack.redis_port)
        stack.env["REDIS_URL"] = f"redis://127.0.0.1:{self.proxy.port}/0"
        self.workers = stack.start_workers(self.topics)
        for index in range(config.gateways):
            proc, port = stack.start_gateway(processes=1, name=f"gateway-{index}")
            self.gateways.append(proc)
            self.gateway_ports.append(port)
        return fixture

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/ws" for port in self.gateway_ports]

    def healthy(self) -> bool:
        return (all(http_ok(f"http://127.0.0.1:{port}/healthz") for port in self.gateway_ports)
                and subscribed(self.stack.env["REDIS_URL"], self.topics))

    def inject(self, fault: Fault) -> None:
        """Break one part and bring it back (blocking: run it in a thread)."""
        stack = self.stack
        if fault.kind == "worker_kill":
            victim = self.workers[fault.target]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(STACK_TIMEOUT)
            self.starts["worker"] += 1
            topic = self.topics[fault.target]
            self.workers[fault.target] = stack.start_worker(topic, name=f"worker-{topic}-{self.starts['worker']}")
        elif fault.kind == "gateway_restart":
            proc = self.gateways[fault.target]
            assert proc is not None
            stack.stop_process(proc)
            self.starts["gateway"] += 1
            self.gateways[fault.target], _ = stack.start_gateway(
                port=self.gateway_ports[fault.target], processes=1,
                name=f"gateway-{fault.target}-{self.starts['gateway']}")
        elif fault.kind == "redis_restart":
            stack.stop_redis()
            stack.restart_redis()
        elif fault.kind == "redis_sever":
            assert self.proxy is not None
            self.proxy.sever()
        elif fault.kind == "redis_freeze":
            assert self.proxy is not None
            self.proxy.freeze()
            try:
                time.sleep(fault.seconds)
            finally:
                self.proxy.thaw()
        else:
            raise ValueError(f"unknown fault {fault.kind}")
        wait_for(self.healthy, f"the stack after {fault.kind}", STACK_TIMEOUT)

    def stored(self, rooms: list[str]) -> list[inv.StoredMessage]:
        out = subprocess.run([sys.executable, "manage.py", "shell", "-c", STORED_QUERY], cwd=ROOT,
                             env=self.stack.env, input=json.dumps(rooms), capture_output=True, text=True, check=True)
        return [inv.StoredMessage(pk, username, room, client_uuid)
                for pk, username, room, client_uuid in json.loads(out.stdout.strip().splitlines()[-1])]

    def stop(self) -> None:
        try:
            self.stack.stop()
        finally:
            if self.proxy is not None:
                self.proxy.close()


async def wait_until(check, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(interval)
    return check()


async def run_async(config: RunConfig, faults: FaultStack, fixture: dict[str, Any]) -> Report:
    started = time.monotonic()
    schedule = fault_schedule(config.seed, config.workers, config.gateways, config.kinds, config.freeze)
    rooms_of: dict[int, list[str]] = {user["id"]: [] for user in fixture["users"]}
    for room in fixture["rooms"]:
        for member in room["members"]:
            rooms_of[member].append(room["id"])
    clients = [ChatClient(f"c{index}", user, rooms_of[user["id"]], faults.gateway_urls, config.seed,
                          config.message_interval)
               for index, user in enumerate(fixture["users"]) if rooms_of[user["id"]]]
    injected: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(client.run(session)) for client in clients]
        try:
            if not await wait_until(lambda: all(c.ready.is_set() for c in clients), STACK_TIMEOUT):
                logger.warning("not every client connected within %.0f s", STACK_TIMEOUT)
            faults_began = time.monotonic()
            for number, fault in enumerate(schedule, 1):
                left = config.duration - (time.monotonic() - faults_began)
                if left <= fault.gap and number > len(config.kinds):
                    await asyncio.sleep(max(0.0, left))  # the last stretch: traffic, no fault
                    break
                await asyncio.sleep(fault.gap)
                logger.info("fault %d: %s (target %d%s)", number, fault.kind, fault.target,
                            f", {fault.seconds:.1f} s" if fault.seconds else "")
                await asyncio.to_thread(faults.inject, fault)
                injected[fault.kind] += 1
            fault_seconds = time.monotonic() - faults_began
            # The quiet period: no new messages; every client settles (all acknowledged or given up).
            for client in clients:
                client.sending = False
                client.wakeup.set()
            if not await wait_until(lambda: all(c.settled for c in clients), SETTLE_TIMEOUT):
                logger.warning("unsettled after %.0f s: %s", SETTLE_TIMEOUT,
                               [c.log.client_id for c in clients if not c.settled][:20])
            for client in clients:
                client.final_requested = True
                client.wakeup.set()
            await wait_until(lambda: all(not c.final_requested and c.settled for c in clients), SETTLE_TIMEOUT)
        finally:
            await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
            await asyncio.wait(tasks, timeout=30)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        for uuid in client.pending:
            client.given_up.setdefault(uuid, "not acknowledged by the end of the run")
    stored = await asyncio.to_thread(faults.stored, [room["id"] for room in fixture["rooms"]])
    logs = [client.log for client in clients]
    violations = inv.check_all(logs, stored)
    violations += [inv.Violation("unexpected", c.log.client_id, f"log truncated at {MAX_EVENTS} events")
                   for c in clients if c.truncated]
    violations += [inv.Violation("unexpected", c.log.client_id, f"client failed: {c.crashed}")
                   for c in clients if c.crashed]
    closes: Counter[int] = Counter(event.code for log in logs for event in log.events
                                   if event.kind == "close" and event.by_server)
    errors = Counter(event.frame.get("error_code") for log in logs for event in log.events
                     if event.kind == "recv" and event.frame and event.frame.get("status") == "error")
    resyncs = sum(1 for log in logs for event in log.events
                  if event.kind == "recv" and event.frame and event.frame.get("action") == "resync"
                  and "uuid" not in event.frame)
    return Report(seed=config.seed, clients=len(clients),
                  faults={kind: injected.get(kind, 0) for kind in config.kinds},
                  sent=sum(c.sent_messages for c in clients), acknowledged=sum(len(c.acked) for c in clients),
                  stored=len(stored), given_up=sum(len(c.given_up) for c in clients),
                  reconnects=sum(c.reconnects for c in clients), resyncs=resyncs, closes=dict(closes),
                  errors=dict(errors),
                  violations=violations, elapsed=time.monotonic() - started,
                  duration=fault_seconds)


def run(config: RunConfig) -> Report:
    """Start the stack, run the clients and the schedule, check the invariants, stop everything."""
    faults = FaultStack(config)
    try:
        fixture = faults.start()
        return asyncio.run(run_async(config, faults, fixture))
    finally:
        faults.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("FAULT_RUN_DURATION", "120")),
                        help="seconds of faults before the quiet period (default: FAULT_RUN_DURATION or 120)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--message-interval", type=float, default=5.0,
                        help="mean seconds between two messages of one client (default 5)")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help=f"the kinds of fault to inject, comma-separated (default: {', '.join(FAULT_KINDS)})")
    parser.add_argument("--freeze", type=float, nargs=2, default=FREEZE_SECONDS, metavar=("MIN", "MAX"),
                        help="how long a Redis freeze lasts, in seconds (default 2 5)")
    parser.add_argument("--log-dir", type=Path, default=None, help="where the processes' logs go (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object too")
    args = parser.parse_args(argv)
    kinds = tuple(kind.strip() for kind in args.faults.split(",") if kind.strip())
    if not kinds or set(kinds) - set(FAULT_KINDS):
        parser.error(f"--faults takes kinds among {', '.join(FAULT_KINDS)}")
    if not 0 < args.freeze[0] <= args.freeze[1]:
        parser.error("--freeze takes MIN and MAX seconds, 0 < MIN <= MAX")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = RunConfig(seed=args.seed, duration=args.duration, clients=args.clients, workers=args.workers,
                       gateways=args.gateways, message_interval=args.message_interval, kinds=kinds,
                       freeze=tuple(args.freeze), log_dir=args.log_dir)
    try:
        report = run(config)
    except (StackError, subprocess.CalledProcessError) as exc:
        logger.error("the stack did not start: %s %s", exc, getattr(exc, "stderr", "") or "")
        return 2
    print(report.summary())
    if args.json:
        print(json.dumps(report.as_json()))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
