"""The benchmark's load generator: many authenticated WebSocket clients in one asyncio process,
driven by an open-loop schedule.

Each step sends `new_message` frames at times fixed in advance (message i at t0 + i / rate),
spread over the rooms and their members, whatever the server does meanwhile. Latency is measured
from the scheduled time, so a server that falls behind cannot hide it by slowing the sender (a
closed loop, where each client waits for its reply before the next, measures less and less load
as the server slows down: coordinated omission). Round trip: until the sender's own connection
gets the reply. Fan-out: until the last member's connection got it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import aiohttp
import psutil

from bench.gateways import gateway_figures, gateways_per_envelope, scrape, totals

logger = logging.getLogger("bench")

# A frame that echoes a uuid starts with exactly this (protocol.encode of a reply: uuid first).
_UUID_PREFIX = '{"uuid":"'
# How far into a reply its status is found: uuid (≤ 64), action and room (≤ 36) come first.
_STATUS_WITHIN = 220
# A step whose generator used more than this share of one core measured its own limit too.
GENERATOR_BOUND_PCT = 85.0
# A step during which processes not under measurement (the machine is shared) used more than this
# share of one core is flagged: its figures say as much about them as about the chat.
NOISY_PCT = 30.0


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of `values` (None for none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


def summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)
    return {"p50": ms(percentile(values, 0.50)), "p90": ms(percentile(values, 0.90)),
            "p99": ms(percentile(values, 0.99)), "max": ms(max(values) if values else None)}


class Watched:
    """CPU and RSS of a set of processes (the gateway's gunicorn tree, the workers, Redis)."""

    def __init__(self, groups: dict[str, list[int]] | None = None, tree_roots: Iterable[int] = ()) -> None:
        self.groups: dict[str, list[psutil.Process]] = {}
        for name, pids in (groups or {}).items():
            procs = []
            for pid in pids:
                try:
                    proc = psutil.Process(pid)
                    procs.append(proc)
                    if pid in set(tree_roots):
                        procs.extend(proc.children(recursive=True))
                except psutil.NoSuchProcess:
                    continue
            self.groups[name] = procs
        self.me = psutil.Process()

    def cpu(self) -> dict[str, float]:
        """Seconds of CPU (user + system) per group so far, the generator's own, and the whole
        machine's busy time (every process, ours or not: the machine is shared)."""
        totals = {"generator": _cpu_seconds(self.me)}
        for name, procs in self.groups.items():
            totals[name] = sum(_cpu_seconds(proc) for proc in procs)
        machine = psutil.cpu_times()
        totals["machine"] = (machine.user + machine.nice + machine.system + getattr(machine, "irq", 0.0)
                             + getattr(machine, "softirq", 0.0))
        # Time the hypervisor gave to other guests while ours wanted to run: a slower machine.
        totals["steal"] = getattr(machine, "steal", 0.0)
        return totals

    def rss(self, names: Iterable[str]) -> int | None:
        """Resident memory summed over the named groups, in bytes; None without processes to watch."""
        total, seen = 0, False
        for name in names:
            for proc in self.groups.get(name, []):
                try:
                    total += proc.memory_info().rss
                    seen = True
                except psutil.NoSuchProcess:
                    continue
        return total if seen else None


def _cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def cpu_percent(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU used between two `Watched.cpu` readings, as % of one core; `others`: the rest of the
    machine's busy time, every process not watched (with no stack watched, the stack too)."""
    used = {name: round(100 * (after[name] - before.get(name, 0.0)) / seconds, 1) for name in after}
    ours = sum(value for name, value in used.items() if name not in ("machine", "steal"))
    used["others"] = round(max(0.0, used["machine"] - ours), 1)
    return used


class Wire:
    """How the chat's JSON frames travel on a target's WebSocket: as they are (the gateway, Channels)."""

    # A frame as sent, and the frame a received text carries (None: as it is; the default costs
    # the generator nothing per frame). A wire that frames them defines both as methods.
    encode: Callable[[str], str] | None = None
    decode: Callable[[str], str | None] | None = None

    async def open(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> None:
        """What a connection says before its first frame: nothing."""

    def answer(self, text: str) -> str | None:
        """What to send back for a text that is no frame (None: nothing)."""
        return None


class SocketIOWire(Wire):
    """Socket.IO 5 over Engine.IO 4 on the WebSocket transport (the socketio target): the
    connection opens the default namespace, each frame is a `frame` event, and the server's
    Engine.IO pings are answered, as python-socketio's own client does."""

    PREFIX = '42["frame",'
    OPEN, CONNECT, PING, PONG = "0", "40", "2", "3"

    def encode(self, frame: str) -> str:
        return f"{self.PREFIX}{frame}]"

    def decode(self, text: str) -> str | None:
        """The frame an event carries (python-socketio encodes it compactly, keys in order)."""
        return text[len(self.PREFIX):-1] if text.startswith(self.PREFIX) else None

    async def open(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> None:
        opened = await ws.receive_str(timeout=timeout)
        if not opened.startswith(self.OPEN):
            raise RuntimeError(f"no Engine.IO open packet: {opened[:100]!r}")
        await ws.send_str(self.CONNECT)
        connected = await ws.receive_str(timeout=timeout)
        if not connected.startswith(self.CONNECT):
            raise RuntimeError(f"namespace not connected: {connected[:100]!r}")

    def answer(self, text: str) -> str | None:
        return self.PONG if text == self.PING else None


def wire_for(url: str) -> Wire:
    """A Socket.IO endpoint is known by its path; every other target takes the chat's frames as they are."""
    return SocketIOWire() if "/socket.io/" in url else Wire()


class Client:
    """One authenticated WebSocket of one user."""

    __slots__ = ("user_id", "ws", "reader", "closed")

    def __init__(self, user_id: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.user_id = user_id
        self.ws = ws
        self.reader: asyncio.Task[None] | None = None
        self.closed = False


class Sent:
    """A message of a step: when it was due, and what came back for it."""

    __slots__ = ("scheduled", "sent", "sender", "expected", "got", "rtt", "done", "error")

    def __init__(self, scheduled: float, sender: int, expected: int) -> None:
        self.scheduled = scheduled
        self.sent = 0.0
        self.sender = sender
        self.expected = expected
        self.got = 0
        self.rtt: float | None = None
        self.done: float | None = None
        self.error = False


@dataclass(frozen=True)
class Planned:
    """One message of a step's schedule: who sends which frame to which room."""

    frame_uuid: str
    sender: int
    room: str
    frame: str
    recipients: int


class Plannable(Protocol):
    """What a step sends: a name, the users it needs connected, and the plan of its messages."""

    name: str

    @property
    def users(self) -> list[int]: ...

    def plan(self, count: int, tag: str, connected: set[int]) -> list[Planned]: ...


@dataclass
class Scenario:
    """Rooms and their members; senders go round the rooms, and round each room's members."""

    name: str
    rooms: list[tuple[str, list[int]]]

    @property
    def users(self) -> list[int]:
        return sorted({member for _, members in self.rooms for member in members})

    def plan(self, count: int, tag: str, connected: set[int]) -> list[Planned]:
        plan = []
        for index in range(count):
            room, members = self.rooms[index % len(self.rooms)]
            senders = [m for m in members if m in connected]
            sender = senders[(index // len(self.rooms)) % len(senders)]
            frame_uuid = uuid.uuid4().hex
            frame = json.dumps({"uuid": frame_uuid, "action": "new_message", "room": room,
                                "text": f"bench {tag} {index}"}, separators=(",", ":"))
            plan.append(Planned(frame_uuid, sender, room, frame, sum(1 for m in members if m in connected)))
        return plan


@dataclass
class DirectScenario:
    """Pairs of users who send each other direct messages (`direct_message`), each reply going to
    both; senders go round the pairs, and in each pair take turns."""

    name: str
    pairs: list[tuple[int, int]]
    usernames: dict[int, str]

    @classmethod
    def paired(cls, users: Sequence[dict[str, Any]], seed: int = 1) -> DirectScenario:
        """The users in random pairs (seeded): a partner is on any gateway, its own one included."""
        shuffled = list(users)
        random.Random(seed).shuffle(shuffled)
        pairs = [(shuffled[n]["id"], shuffled[n + 1]["id"]) for n in range(0, len(shuffled) - 1, 2)]
        return cls(f"{len(pairs)} pairs in direct messages ({2 * len(pairs)} users)", pairs,
                   {user["id"]: user["username"] for user in users})

    @property
    def users(self) -> list[int]:
        return sorted({user for pair in self.pairs for user in pair})

    def plan(self, count: int, tag: str, connected: set[int]) -> list[Planned]:
        pairs = [pair for pair in self.pairs if pair[0] in connected and pair[1] in connected]
        plan = []
        for index in range(count):
            pair = pairs[index % len(pairs)]
            turn = (index // len(pairs)) % 2
            sender, partner = pair[turn], pair[1 - turn]
            frame_uuid = uuid.uuid4().hex
            frame = json.dumps({"uuid": frame_uuid, "action": "direct_message", "to": self.usernames[partner],
                                "text": f"bench {tag} {index}"}, separators=(",", ":"))
            plan.append(Planned(frame_uuid, sender, "", frame, 2))
        return plan


@dataclass
class StepResult:
    scenario: str
    offered_per_s: float
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.figures.get("ok"))


class LoadGenerator:
    """The clients, the table of messages in flight, and the open-loop steps."""

    def __init__(self, url: str | Sequence[str], watched: Watched, connect_timeout: float = 30.0,
                 metrics_urls: Sequence[str] = ()) -> None:
        # Several gateways: clients are spread over them round-robin, in the order they connect.
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url = self.urls[0]
        self.wire = wire_for(self.url)
        self.watched = watched
        # One /metrics per gateway process (a port each): per-process figures for every step.
        self.metrics_urls = list(metrics_urls)
        self._assigned = 0
        self.connect_timeout = connect_timeout
        self.clients: dict[int, Client] = {}
        self.in_flight: dict[str, Sent] = {}
        self.outstanding = 0
        self.all_answered = asyncio.Event()
        self.stray_frames = 0
        self.frames = 0
        self.last_frame = time.perf_counter()
        self.lost_connections = 0
        self._stopping = False
        self._scheduling = False
        self._send_tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadGenerator:
        # limit=0: a WebSocket holds its connector slot for as long as it is open.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connections ---------------------------------------------------------------------------

    async def connect(self, users: Sequence[dict[str, Any]], concurrency: int) -> dict[str, Any]:
        """Open and authenticate one connection per user; time it, and the generator's CPU."""
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []

        async def one(user: dict[str, Any], url: str) -> None:
            async with gate:
                try:
                    await self._open(user, url)
                except Exception as exc:  # one failed client is counted, the others go on
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])

        cpu_before = self.watched.cpu()
        started = time.perf_counter()
        await asyncio.gather(*(one(user, self._next_url()) for user in users if user["id"] not in self.clients))
        seconds = time.perf_counter() - started
        cpu = cpu_percent(cpu_before, self.watched.cpu(), seconds)
        return {"connections": len(users) - len(failures), "failed": len(failures),
                "failures": failures[:5], "seconds": round(seconds, 3),
                "per_second": round((len(users) - len(failures)) / seconds, 1), "concurrency": concurrency,
                "cpu_pct": cpu}

    def _next_url(self) -> str:
        url = self.urls[self._assigned % len(self.urls)]
        self._assigned += 1
        return url

    async def _open(self, user: dict[str, Any], url: str) -> None:
        assert self._session is not None
        ws = await self._session.ws_connect(url, compress=0, autoping=True, heartbeat=None,
                                            timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
        wire = self.wire
        try:
            await wire.open(ws, self.connect_timeout)
            frame = json.dumps({"uuid": "auth", "action": "authenticate", "token": user["token"]})
            await ws.send_str(frame if wire.encode is None else wire.encode(frame))
            text = await ws.receive_str(timeout=self.connect_timeout)
            reply = json.loads(text if wire.decode is None else wire.decode(text) or "{}")
        except BaseException:
            await ws.close()
            raise
        if reply.get("status") != "success":
            await ws.close()
            raise RuntimeError(f"authenticate failed: {reply.get('error_code')}")
        client = Client(user["id"], ws)
        client.reader = asyncio.create_task(self._read(client))
        self.clients[user["id"]] = client

    async def _read(self, client: Client) -> None:
        on_frame = self._on_frame
        wire = self.wire
        decode = wire.decode
        try:
            async for message in client.ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                if decode is None:
                    on_frame(client, message.data)
                    continue
                frame = decode(message.data)
                if frame is not None:
                    on_frame(client, frame)
                    continue
                answer = wire.answer(message.data)
                if answer is not None:
                    await client.ws.send_str(answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("client of user %s: %s", client.user_id, exc)
        finally:
            client.closed = True
            if not self._stopping:
                self.lost_connections += 1
                logger.warning("connection of user %s closed by the server (code %s)", client.user_id,
                               client.ws.close_code)

    def _on_frame(self, client: Client, text: str) -> None:
        now = time.perf_counter()
        self.frames += 1
        self.last_frame = now
        # The uuid is read off the front of the frame: parsing every fanned-out copy as JSON would
        # make the generator, not the server, the first thing to saturate.
        if not text.startswith(_UUID_PREFIX):
            self.stray_frames += 1
            return
        end = text.find('"', len(_UUID_PREFIX))
        sent = self.in_flight.get(text[len(_UUID_PREFIX):end])
        if sent is None:
            self.stray_frames += 1
            return
        if client.user_id == sent.sender and sent.rtt is None:
            sent.rtt = now - sent.scheduled
            if text.find('"status":"error"', 0, _STATUS_WITHIN) != -1:
                sent.error = True
                logger.warning("error reply: %.300s", text)
                self._answered(sent, now)
                return
        sent.got += 1
        if sent.got == sent.expected:
            self._answered(sent, now)

    def _answered(self, sent: Sent, now: float) -> None:
        if sent.done is None:
            sent.done = now
            self.outstanding -= 1
            # While a step is still scheduling, none in flight is no end: more are to come.
            if self.outstanding == 0 and not self._scheduling:
                self.all_answered.set()

    async def close(self) -> None:
        self._stopping = True
        clients = list(self.clients.values())
        if clients:
            await asyncio.wait([asyncio.create_task(c.ws.close()) for c in clients], timeout=10)
        for client in clients:
            if client.reader is not None:
                client.reader.cancel()
        await asyncio.gather(*(c.reader for c in clients if c.reader is not None), return_exceptions=True)
        self.clients.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- steps ---------------------------------------------------------------------------------

    async def quiet(self, idle: float = 0.3, limit: float = 15.0) -> float:
        """Wait until no frame came for `idle` seconds (a backlog of an earlier step drained)."""
        started = time.perf_counter()
        while time.perf_counter() - started < limit:
            if time.perf_counter() - self.last_frame >= idle:
                break
            await asyncio.sleep(idle / 3)
        return time.perf_counter() - started

    async def step(self, scenario: Plannable, rate: float, seconds: float, drain: float,
                   bound_ms: float, tag: str) -> StepResult:
        """Send `rate` messages a second for `seconds` on an open-loop schedule; wait up to
        `drain` seconds after the last one for everything to arrive; return the figures."""
        count = max(1, round(rate * seconds))
        connected = {pk for pk, client in self.clients.items() if not client.closed}
        plan = scenario.plan(count, tag, connected)
        if self.wire.encode is not None:  # framed before the clock starts, as the plain frames are
            plan = [replace(planned, frame=self.wire.encode(planned.frame)) for planned in plan]
        # No cyclic garbage collection inside the measured window: a full collection over the
        # objects of 4,400 connections (300,000 of them) stops this loop for 250 ms on this machine,
        # which would be charged to the server as latency. Collected here instead, and the
        # long-lived objects (the connections) frozen out of later collections.
        gc.collect()
        gc.freeze()
        gc_enabled = gc.isenabled()
        gc.disable()
        try:
            return await self._step(scenario, rate, seconds, count, plan, drain, bound_ms)
        finally:
            if gc_enabled:
                gc.enable()

    async def _step(self, scenario: Plannable, rate: float, seconds: float, count: int, plan: list[Planned],
                    drain: float, bound_ms: float) -> StepResult:
        self.in_flight.clear()
        self.all_answered.clear()
        self.outstanding = 0
        lost_before = self.lost_connections
        frames_before = self.frames
        sends: list[Sent] = []
        interval = 1.0 / rate
        loop = asyncio.get_running_loop()

        counters_before = await self._scrape()
        cpu_before = self.watched.cpu()
        t0 = time.perf_counter() + 0.02
        index = 0
        self._scheduling = True
        try:
            while index < count:
                now = time.perf_counter()
                while index < count and t0 + index * interval <= now:
                    planned = plan[index]
                    sent = Sent(t0 + index * interval, planned.sender, planned.recipients)
                    sent.sent = now
                    self.in_flight[planned.frame_uuid] = sent
                    self.outstanding += 1
                    sends.append(sent)
                    client = self.clients[planned.sender]
                    # A task per send: a connection whose socket is full delays its own frames only.
                    task = loop.create_task(self._send(client, planned.frame, sent))
                    self._send_tasks.add(task)
                    task.add_done_callback(self._send_tasks.discard)
                    index += 1
                if index < count:
                    await asyncio.sleep(max(0.0, t0 + index * interval - time.perf_counter()))
        finally:
            self._scheduling = False
        if self.outstanding == 0:
            self.all_answered.set()
        last_due = t0 + (count - 1) * interval
        try:
            await asyncio.wait_for(self.all_answered.wait(), max(0.0, last_due + drain - time.perf_counter()))
        except TimeoutError:
            pass
        ended = time.perf_counter()
        cpu = cpu_percent(cpu_before, self.watched.cpu(), ended - t0)
        self.in_flight.clear()  # what comes later is counted as stray
        counters_after = await self._scrape()
        per_gateway = ([] if counters_before is None or counters_after is None else
                       gateway_figures(counters_before, counters_after, ended - t0))

        answered = [s for s in sends if s.done is not None and not s.error]
        errors = sum(1 for s in sends if s.error)
        rtts = [s.rtt for s in sends if s.rtt is not None and not s.error]
        fanouts = [s.done - s.scheduled for s in answered]
        lags = [s.sent - s.scheduled for s in sends]
        deliveries = sum(s.got for s in sends)
        expected = sum(s.expected for s in sends)
        rtt_ms, fanout_ms = summary_ms(rtts), summary_ms(fanouts)
        lost = self.lost_connections - lost_before
        reasons = []
        if errors:
            reasons.append(f"{errors} error replies")
        if len(answered) + errors < count:
            reasons.append(f"{count - len(answered) - errors} not fully delivered within {drain:g}s")
        if lost:
            reasons.append(f"{lost} connections lost")
        for name, figures in (("round trip", rtt_ms), ("fan-out", fanout_ms)):
            if figures["p99"] is not None and figures["p99"] > bound_ms:
                reasons.append(f"{name} p99 {figures['p99']:.0f} ms > {bound_ms:g} ms")
        generator_pct = cpu.get("generator", 0.0)
        figures = {
            "scenario": scenario.name,
            "offered_per_s": rate,
            "seconds": seconds,
            "messages": count,
            "recipients_per_message": round(expected / count, 2),
            "offered_deliveries_per_s": round(rate * expected / count, 1),
            "delivered_messages": len(answered),
            "deliveries": deliveries,
            "deliveries_expected": expected,
            "errors": errors,
            "lost_connections": lost,
            "round_trip_ms": rtt_ms,
            "fan_out_ms": fanout_ms,
            "send_lag_ms": summary_ms(lags),
            "frames_received": self.frames - frames_before,
            "wall_seconds": round(ended - t0, 3),
            "cpu_pct": cpu,
            # CPU time each part spent per message offered: what one more message costs it.
            "cpu_ms_per_message": {name: round(pct * 10 / rate, 3) for name, pct in cpu.items()},
            "generator_cpu_pct": generator_pct,
            "generator_bound": generator_pct > GENERATOR_BOUND_PCT,
            "noisy": bool(self.watched.groups) and cpu["others"] > NOISY_PCT,
            # Each gateway process's envelopes and frames (with --gateways: one process a port),
            # and how many processes each envelope reached: one envelope answers each request.
            "gateways": per_gateway,
            "gateways_total": totals(per_gateway) if per_gateway else None,
            "gateways_per_envelope": gateways_per_envelope(per_gateway, count) if per_gateway else None,
            "ok": not reasons,
            "why": "; ".join(reasons),
        }
        return StepResult(scenario.name, rate, figures)

    async def _scrape(self) -> list[Any] | None:
        if not self.metrics_urls or self._session is None:
            return None
        return await scrape(self._session, self.metrics_urls)

    async def _send(self, client: Client, frame: str, sent: Sent) -> None:
        try:
            await client.ws.send_str(frame)
        except (ConnectionError, RuntimeError) as exc:
            # Counted as not delivered; the connection's reader notes the loss.
            logger.warning("send on the connection of user %s failed: %s", client.user_id, exc)
