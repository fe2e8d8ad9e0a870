"""Faults of the processes, end to end: a worker killed, a gateway stopped, a client that stops reading.

Each test starts the real processes it breaks (workers, gunicorn gateways, an embedded Redis) and
talks to them over sockets. The figures each one measures are logged (run with
`-o log_cli=true --log-cli-level=INFO` to see them); the bounds asserted are the issue's, generous.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import signal
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import pytest
import redis.asyncio as aioredis
from django.db.models import Count

from chat.models import ChatMessage
from scripts.stack import Stack, wait_for
from tests.e2e.client import close_code
from tests.e2e.conftest import E2EStack
from websockets_gateway import redis_clients
from websockets_gateway.bus import DEAD_TOPIC_RETRY_AFTER
from websockets_gateway.connection import CLOSE_TIMEOUT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

logger = logging.getLogger(__name__)

# A bound on any one wait of these tests (a close, a batch of replies): a hang fails, it never blocks.
WAIT = 30.0
# How often a wait on something only a log or a clock can tell (a gateway log line) looks again.
POLL_INTERVAL = 0.05


# ---------------------------------------------------------------------------------------------
# Clients


class Tally:
    """A count several clients bump, and a bounded wait for it to reach a number."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.count += 1
        self._changed.set()

    async def reach(self, target: int, timeout: float = WAIT) -> None:
        async def wait() -> None:
            while self.count < target:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


@dataclass
class Answer:
    frame: dict[str, Any] | None  # None: the connection closed first
    sent_at: float
    answered_at: float

    @property
    def elapsed(self) -> float:
        return self.answered_at - self.sent_at


class Peer:
    """A WebSocket client whose reader task records every frame as it arrives, so that a test can
    pipeline requests (send many, wait for none) and time the answer to each.

    A request's answer is the first frame that carries its uuid after it was sent; frames that
    carry one of our uuids when no request with it waits (a success after a `timeout`) are late;
    frames with other uuids are other members' broadcasts.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, user: dict[str, Any], tally: Tally | None = None) -> None:
        self.ws = ws
        self.user = user
        self.tally = tally
        self.waiting: dict[str, tuple[float, asyncio.Future[Answer]]] = {}
        # The latest request's future by uuid, kept once answered: future() after request() never misses it.
        self._futures: dict[str, asyncio.Future[Answer]] = {}
        self.sent: set[str] = set()
        self.late: list[dict[str, Any]] = []
        # Only the uuids: a broadcast may carry a large text, and a test may see thousands.
        self.others: list[str] = []
        self._other_arrived = asyncio.Event()
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.closed_at: float | None = None
        self._reader = asyncio.create_task(self._read(), name=f"reader-{user['username']}")

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, url: str, user: dict[str, Any],
                      tally: Tally | None = None) -> Peer:
        peer = cls(await session.ws_connect(url), user, tally)
        answer = await peer.answer(await peer.request("authenticate", token=user["token"]))
        assert answer.frame is not None and answer.frame["status"] == "success", answer
        return peer

    async def request(self, action: str, uuid: str | None = None, **fields: Any) -> str:
        """Send one frame without waiting for its answer; return its uuid."""
        uuid = uuid or secrets.token_hex(8)
        assert uuid not in self.waiting, f"{uuid} is already waiting for an answer"
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        sent_at = asyncio.get_running_loop().time()
        self.waiting[uuid] = (sent_at, future)
        self._futures[uuid] = future
        self.sent.add(uuid)
        try:
            await self.ws.send_str(json.dumps({"uuid": uuid, "action": action, **fields}))
        except BaseException:
            self.waiting.pop(uuid, None)
            self._futures.pop(uuid, None)
            self.sent.discard(uuid)
            raise
        return uuid

    async def heard(self, uuids: set[str], timeout: float = WAIT) -> None:
        """Until every one of `uuids` came as another member's broadcast: a poster's own reply
        can come before the copies for the others (or the connection closed: then return)."""
        async def wait() -> None:
            while not uuids <= set(self.others) and not self.closed.is_set():
                self._other_arrived.clear()
                await self._other_arrived.wait()  # set by a broadcast, and when the connection ends

        await asyncio.wait_for(wait(), timeout)

    def future(self, uuid: str) -> asyncio.Future[Answer]:
        """The answer to the latest request with this uuid."""
        return self._futures[uuid]

    async def answer(self, uuid: str, timeout: float = WAIT) -> Answer:
        return await asyncio.wait_for(asyncio.shield(self.future(uuid)), timeout)

    async def round_trip(self, action: str, timeout: float = WAIT, **fields: Any) -> Answer:
        return await self.answer(await self.request(action, **fields), timeout)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        ended: aiohttp.WSMessage | None = None  # the message that ended the connection: its close code
        try:
            while True:
                message = await self.ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.ERROR):
                    ended = message
                    break
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                uuid = frame.get("uuid")
                if uuid in self.waiting:
                    sent_at, future = self.waiting.pop(uuid)
                    future.set_result(Answer(frame, sent_at, loop.time()))
                    if self.tally is not None:
                        self.tally.bump()
                elif uuid in self.sent:
                    self.late.append(frame)
                else:
                    self.others.append(uuid)
                    self._other_arrived.set()
        finally:
            self.close_code = close_code(self.ws, ended) if ended is not None else self.ws.close_code
            now = self.closed_at = loop.time()
            self.closed.set()
            self._other_arrived.set()
            for sent_at, future in self.waiting.values():
                future.set_result(Answer(None, sent_at, now))
            self.waiting.clear()


class RawWebSocket:
    """A WebSocket client on a plain blocking socket with a tiny receive buffer: it reads only
    when told to, so between reads the gateway finds a client that has stopped reading."""

    RECEIVE_BUFFER = 4096

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect(), so that the window the client advertises is small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RECEIVE_BUFFER)
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the gateway closed the TCP connection")
        return chunk

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._recv()
        taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_json(self, frame: dict[str, Any]) -> None:
        self.send_frame(0x1, json.dumps(frame).encode())

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(length)

    def read_json(self) -> dict[str, Any]:
        opcode, payload = self.read_frame()
        assert opcode == 0x1, (opcode, payload[:200])
        return json.loads(payload)

    def read_until_close(self) -> tuple[int, int]:
        """Read everything the gateway sent; return (close code, text frames read before it)."""
        texts = 0
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.send_frame(0x8, payload[:2])  # complete the close handshake
                return code, texts
            if opcode == 0x1:
                texts += 1

    def close(self) -> None:
        self.sock.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def gather_answers(futures: list[asyncio.Future[Answer]], timeout: float) -> list[Answer]:
    return await asyncio.wait_for(asyncio.gather(*futures), timeout)


async def wait_for_log(stack: Stack, name: str, needle: str, timeout: float = WAIT) -> None:
    """Wait, bounded, for a line of a process's log; only the log tells what the gateway did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while needle not in stack.log(name):
        if loop.time() > deadline:
            raise AssertionError(f"{name} never logged {needle!r}")
        await asyncio.sleep(POLL_INTERVAL)


# ---------------------------------------------------------------------------------------------
# 1. A worker dies


REQUEST_TIMEOUT = 3.0
WORKER_COUNT = 3
CLIENT_COUNT = 10
MESSAGES_IN_FLIGHT = 300
# The bounds: an answer within REQUEST_TIMEOUT + 1 s of sending, the dead topic avoided within 2 s.
ANSWER_BOUND = REQUEST_TIMEOUT + 1.0
AVOIDED_WITHIN = 2.0
BURST_PER_CLIENT = 10
# Each client sends one more request this often, from the batch until this long after the kill.
TRICKLE_INTERVAL = 0.1
TRICKLE_AFTER_KILL = AVOIDED_WITHIN + 0.5
RETRY_ROUNDS = 5

# SPUBLISH on a Redis Cluster (websockets_gateway/redis_clients.py).
PUBLISH_RE = re.compile(r'^S?PUBLISH (\S+) (.*)$')
REQUEST_ID_RE = re.compile(r'"request_id":"([^"]+)"')


@dataclass
class WorkerDeathStack:
    e2e: E2EStack
    workers: dict[str, Any]  # topic -> Popen
    url: str


@pytest.fixture(scope="module")
def worker_death_stack(e2e_database_url, django_db_blocker, tmp_path_factory):
    """A Redis of its own (unless REDIS_URL names one, as for every stack), three workers each on its
    own topic, one gateway process over them."""
    tag = f"wd{secrets.token_hex(3)}"
    stack = Stack.create(
        log_dir=tmp_path_factory.mktemp("faults-worker-death"),
        DATABASE_URL=e2e_database_url,
        WORKER_RESPONSE_TOPIC=f"{tag}_response",
        REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
        # The subject is the dead worker, not the rate limit: every frame here stays under it.
        RATE_LIMIT="1000",
        RATE_LIMIT_BURST="1000",
        # Nor the in-flight bound: 30 of the batch per client, with the trickle on top.
        MAX_IN_FLIGHT="64",
        LOG_LEVEL="INFO",
    )
    try:
        redis_url = stack.start_redis()
        topics = [f"{tag}_worker_{n}" for n in range(1, WORKER_COUNT + 1)]
        workers = dict(zip(topics, stack.start_workers(topics)))
        _, port = stack.start_gateway(processes=1, name=f"gateway-{tag}")
        url = f"http://127.0.0.1:{port}/ws"
        yield WorkerDeathStack(E2EStack(stack, tag, redis_url, topics, url, url, django_db_blocker, 0), workers, url)
    finally:
        stack.stop()


class PublishLog:
    """Every PUBLISH to a worker topic of a request whose uuid starts with `uuid_prefix`, seen by
    Redis MONITOR: (server time, topic, request id). On a Redis Cluster, every SPUBLISH, seen by
    MONITOR on each master.

    MONITOR, not a subscription: a subscriber on the dead topic would count as a receiver, and
    the gateway would rightly take it for a worker come back.
    """

    def __init__(self, redis_url: str, topics: list[str], uuid_prefix: str, cluster: bool = False) -> None:
        self.redis_url = redis_url
        self.cluster = cluster
        self.uuid_marker = f'"uuid":"{uuid_prefix}'
        self.topics = set(topics)
        self.publishes: list[tuple[float, str, str]] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._watch(), name="publish-log")
        ready = asyncio.ensure_future(self.ready.wait())
        await asyncio.wait({ready, self._task}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        if not self.ready.is_set():
            ready.cancel()
            self._task.cancel()
            raise AssertionError("MONITOR did not start")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        if not self.cluster:
            await self._watch_node(aioredis.Redis.from_url(self.redis_url), self.ready)
            return
        cluster = redis_clients.async_client(self.redis_url, True)
        try:
            await cluster.initialize()
            masters = [(node.host, node.port) for node in cluster.get_primaries()]
        finally:
            await cluster.aclose()
        readies = [asyncio.Event() for _ in masters]
        watches = [asyncio.create_task(self._watch_node(aioredis.Redis(host=host, port=port), ready))
                   for (host, port), ready in zip(masters, readies, strict=True)]
        try:
            await asyncio.gather(*(ready.wait() for ready in readies))
            self.ready.set()
            await asyncio.gather(*watches)
        finally:
            for watch in watches:
                watch.cancel()
            await asyncio.gather(*watches, return_exceptions=True)

    async def _watch_node(self, client: aioredis.Redis, ready: asyncio.Event) -> None:
        try:
            async with client.monitor() as monitor:
                ready.set()
                async for command in monitor.listen():
                    match = PUBLISH_RE.match(command["command"])
                    if match and match.group(1) in self.topics and self.uuid_marker in match.group(2):
                        request_id = REQUEST_ID_RE.search(match.group(2))
                        assert request_id is not None, command["command"][:200]
                        self.publishes.append((command["time"], match.group(1), request_id.group(1)))
        finally:
            await client.aclose()

    def by_request(self) -> dict[str, list[tuple[float, str]]]:
        """Each request's publishes in server-time order: on a Cluster the masters' MONITOR streams
        arrive interleaved in any order, so arrival order is not publish order."""
        requests: dict[str, list[tuple[float, str]]] = {}
        for at, topic, request_id in sorted(self.publishes):
            requests.setdefault(request_id, []).append((at, topic))
        return requests


def test_a_killed_worker_costs_timeouts_only_and_its_topic_is_avoided(worker_death_stack):
    wd = worker_death_stack
    dead_topic, live_topics = wd.e2e.worker_topics[0], set(wd.e2e.worker_topics[1:])
    victim = wd.workers[dead_topic]
    data = wd.e2e.fixtures(users=CLIENT_COUNT, rooms=CLIENT_COUNT // 2, room_size=2)
    room_of = {pk: room["id"] for room in data["rooms"] for pk in room["members"]}
    run_id = secrets.token_hex(4)
    numbers = itertools.count()

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        tally = Tally()
        attempts: list[tuple[str, Peer, asyncio.Future[Answer]]] = []

        async def post(peer: Peer, uuid: str | None = None) -> None:
            uuid = uuid or f"wd-{run_id}-{next(numbers)}"
            await peer.request("new_message", uuid=uuid, room=room_of[peer.user["id"]], text=f"message {uuid}")
            attempts.append((uuid, peer, peer.future(uuid)))

        async def post_many(peer: Peer, count: int) -> None:
            for _ in range(count):
                await post(peer)

        trickle_until = [float("inf")]

        async def trickle(peer: Peer) -> None:
            while loop.time() < trickle_until[0]:
                await post(peer)
                await asyncio.sleep(TRICKLE_INTERVAL)  # the pace of the load, not a wait for anything

        async def answers(start: int = 0) -> list[Answer]:
            return await gather_answers([future for _, _, future in attempts[start:]], ANSWER_BOUND + WAIT)

        publish_log = PublishLog(wd.e2e.redis_url, wd.e2e.worker_topics, f"wd-{run_id}-", wd.e2e.redis_cluster)
        async with aiohttp.ClientSession() as session, publish_log as log:
            peers = [await Peer.connect(session, wd.url, user, tally) for user in data["users"]]
            answered_before = tally.count
            # Frozen first, so that its share of the batch is certainly in its hands when it dies,
            # however fast this machine's workers answer.
            os.kill(victim.pid, signal.SIGSTOP)
            # Pipelined: every client sends its share without waiting for any answer.
            await asyncio.gather(*(post_many(peer, MESSAGES_IN_FLIGHT // CLIENT_COUNT) for peer in peers))
            # Requests keep coming across the kill, so that the moment the gateway stops choosing the
            # dead topic shows in what it publishes.
            trickles = [asyncio.create_task(trickle(peer)) for peer in peers]
            # The live workers' share of the batch answered: the victim's is what is left in flight.
            await tally.reach(answered_before + MESSAGES_IN_FLIGHT // 2)
            in_flight_at_kill = len(attempts) - (tally.count - answered_before)
            killed_at, killed_at_loop = time.time(), loop.time()
            os.kill(victim.pid, signal.SIGKILL)
            trickle_until[0] = killed_at_loop + TRICKLE_AFTER_KILL
            await asyncio.gather(*trickles)
            # Well past the bound by now: a burst must find only live workers.
            assert loop.time() - killed_at_loop > AVOIDED_WITHIN
            burst_from = len(attempts)
            burst_sent_at = time.time()
            await asyncio.gather(*(post_many(peer, BURST_PER_CLIENT) for peer in peers))
            first = await answers()
            originals = {uuid for uuid, _, _ in attempts}

            # The client retries every timed-out request with the same uuid until it succeeds.
            failed = [(uuid, peer) for (uuid, peer, _), answer in zip(attempts, first)
                      if answer.frame["status"] != "success"]
            for _ in range(RETRY_ROUNDS):
                if not failed:
                    break
                start = len(attempts)
                for uuid, peer in failed:
                    await post(peer, uuid)
                failed = [(uuid, peer) for (uuid, peer, _), answer in zip(attempts[start:], await answers(start))
                          if answer.frame["status"] != "success"]
            every = await answers()
            # MONITOR has seen every publish: each request it made was answered.
        assert victim.wait(timeout=WAIT) == -signal.SIGKILL
        return {
            "every": every, "first": first, "burst": first[burst_from:], "originals": originals,
            "in_flight_at_kill": in_flight_at_kill, "killed_at": killed_at, "burst_sent_at": burst_sent_at,
            "failed_after_retries": failed, "publishes": log.by_request(), "late": sum(len(p.late) for p in peers),
        }

    result = asyncio.run(scenario())
    killed_at, every, first = result["killed_at"], result["every"], result["first"]

    # Every request, first tries and retries alike, was answered with success or timeout, in time.
    assert all(answer.frame is not None for answer in every)
    outcomes = {(answer.frame["status"], answer.frame.get("error_code")) for answer in every}
    assert outcomes <= {("success", None), ("error", "timeout")}, outcomes
    slowest = max(answer.elapsed for answer in every)
    assert slowest <= ANSWER_BOUND, f"an answer took {slowest:.2f}s (bound {ANSWER_BOUND}s)"
    timed_out = [answer for answer in every if answer.frame["status"] == "error"]
    succeeded = [answer for answer in every if answer.frame["status"] == "success"]
    assert result["in_flight_at_kill"] > 0 and timed_out
    assert result["failed_after_retries"] == []

    # What the gateway published (MONITOR): a publish that reached no one is followed by the same
    # request on another topic, so a request went to the topic of its last publish.
    publishes = result["publishes"]
    assert len(publishes) == len(every)
    went_dead = [trail[-1][0] for trail in publishes.values() if trail[-1][1] == dead_topic]
    # Those handed to the dead worker (frozen, then killed) timed out; others may have, if slow.
    assert len(timed_out) >= len(went_dead) > 0
    last_chosen = max(went_dead) - killed_at
    assert last_chosen <= AVOIDED_WITHIN, f"dead topic chosen {last_chosen:.2f}s after the kill"
    assert {trail[-1][1] for trail in publishes.values() if trail[0][0] > killed_at + AVOIDED_WITHIN} <= live_topics
    after_kill = [trail for trail in publishes.values() if trail[0][0] > killed_at]
    probes = sorted(at - killed_at for trail in publishes.values() for at, topic in trail[:-1] if topic == dead_topic)
    assert probes and probes[0] <= AVOIDED_WITHIN
    # Past the bound, the dead topic only gets the gateway's probes, one per DEAD_TOPIC_RETRY_AFTER (half
    # of it allowed between two, for the jitter between the gateway's clock and Redis's).
    late_probes = [at for at in probes if at > AVOIDED_WITHIN]
    gaps = [later - earlier for earlier, later in itertools.pairwise(late_probes)]
    assert all(gap >= DEAD_TOPIC_RETRY_AFTER / 2 for gap in gaps), late_probes
    assert all(answer.frame["status"] == "success" for answer in result["burst"])

    # Retried with the same uuid, every message is stored exactly once.
    expected = result["originals"]
    counts = dict(wd.e2e.orm(lambda: list(
        ChatMessage.objects.filter(client_uuid__in=expected).values_list("client_uuid").annotate(n=Count("id")))))
    assert set(counts) == expected
    assert set(counts.values()) == {1}, {uuid: n for uuid, n in counts.items() if n != 1}

    logger.info(
        "worker death: %d requests in all (%d first tries), %d in flight at the kill, %d timed out, "
        "%d requests after the kill; answer times: success p50 %.3fs p95 %.3fs max %.3fs, timeout %.3f..%.3fs "
        "(REQUEST_TIMEOUT %.1fs, bound %.1fs); dead topic last chosen %.3fs after the kill, first found "
        "without a subscriber %.3fs after it; publishes reaching no one there at %s s after the kill; "
        "burst of %d sent %.2fs after the kill: all success; %d late frames",
        len(every), len(first), result["in_flight_at_kill"], len(timed_out), len(after_kill),
        percentile([a.elapsed for a in succeeded], 0.5), percentile([a.elapsed for a in succeeded], 0.95),
        max(a.elapsed for a in succeeded), min(a.elapsed for a in timed_out), max(a.elapsed for a in timed_out),
        REQUEST_TIMEOUT, ANSWER_BOUND, last_chosen, probes[0], [round(p, 3) for p in probes], len(result["burst"]),
        result["burst_sent_at"] - killed_at, result["late"])


# ---------------------------------------------------------------------------------------------
# Gateways of the tests' own on the shared stack (its Redis and workers)


@pytest.fixture()
def own_gateway(e2e):
    """Start a gateway of this test's own; whatever is still running of it is stopped afterwards."""
    started = []

    def start(role: str, processes: int, **extra_env: str) -> tuple[Any, int, str]:
        """Return the gunicorn master process, the port and the log name."""
        name = f"gateway-faults-{role}-{secrets.token_hex(3)}"
        proc, port = e2e.stack.start_gateway(processes=processes, name=name, extra_env=extra_env)
        started.append(proc)
        return proc, port, name

    yield start
    for proc in started:
        e2e.stack.stop_process(proc)


# ---------------------------------------------------------------------------------------------
# 2. A gateway stops


LEAVING_CLIENTS = 4
# Bounds a test gone wrong: the stopping gateway's clients send until their windows are full.
MESSAGES_PER_LEAVING_CLIENT = 1000
# Requests each client of the stopping gateway keeps waiting at once.
LEAVING_WINDOW = 8
# Answers the stopping gateway's clients get before its worker is frozen.
ANSWERED_BEFORE_FREEZE = 20
# Round trips the client of the other gateway makes once the stopped one has exited, and its pace
# (well under the default rate limit of that gateway).
CHATS_AFTER_STOP = 5
CHAT_INTERVAL = 0.1


@pytest.fixture()
def own_worker(e2e):
    """A worker of this test's own on a topic of its own; whatever is left of it is resumed (it may
    be frozen) and stopped afterwards."""
    topic = f"{e2e.tag}_own_{secrets.token_hex(3)}"
    proc = e2e.stack.start_worker(topic, name=f"worker-{topic}")
    yield proc, topic
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
    e2e.stack.stop_process(proc)


def test_a_gateway_stopped_with_requests_in_flight_closes_with_1001_and_another_chats_on(e2e, own_gateway,
                                                                                          own_worker):
    # The stopping gateway hands its requests to a worker of its own, frozen before the stop: the
    # requests in flight at the close are certain, not a race with how fast the answers come (with
    # shared workers a batch could answer every waiting request just before the close). The other
    # gateway's client goes through the shared workers.
    worker, topic = own_worker
    proc, port, _ = own_gateway("sigterm", processes=2, RATE_LIMIT="1000", RATE_LIMIT_BURST="1000",
                                WORKER_PROCESS_TOPICS=topic)
    url = e2e.ws_url(port)
    data = e2e.fixtures(users=LEAVING_CLIENTS + 2, rooms=LEAVING_CLIENTS // 2 + 1, room_size=2)
    room_of = {pk: room["id"] for room in data["rooms"] for pk in room["members"]}
    leaving_users, (talker_user, hearer_user) = data["users"][:LEAVING_CLIENTS], data["users"][LEAVING_CLIENTS:]
    assert room_of[talker_user["id"]] == room_of[hearer_user["id"]]
    run_id = secrets.token_hex(4)

    def text(uuid: str) -> str:
        return f"message {uuid}"

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        tally = Tally()
        async with aiohttp.ClientSession() as session:
            peers = [await Peer.connect(session, url, user, tally) for user in leaving_users]
            talker = await Peer.connect(session, e2e.gateway_b, talker_user)
            hearer = await Peer.connect(session, e2e.gateway_b, hearer_user)
            answered_before = tally.count
            sent: dict[str, list[str]] = {peer.user["username"]: [] for peer in peers}
            futures: dict[str, asyncio.Future[Answer]] = {}
            exited = asyncio.Event()
            chats: list[tuple[str, Answer]] = []

            # Set while the stopping gateway's clients may send (cleared while the worker is frozen).
            sending = asyncio.Event()
            sending.set()

            async def pipeline(peer: Peer) -> None:
                window = asyncio.Semaphore(LEAVING_WINDOW)
                for n in range(MESSAGES_PER_LEAVING_CLIENT):
                    await window.acquire()
                    await sending.wait()
                    if peer.closed.is_set():
                        return
                    uuid = f"gs-{run_id}-{peer.user['id']}-{n}"
                    try:
                        await peer.request("new_message", uuid=uuid, room=room_of[peer.user["id"]], text=text(uuid))
                    except ConnectionError:
                        return  # the close is under way: this one never left
                    sent[peer.user["username"]].append(uuid)
                    futures[uuid] = peer.future(uuid)
                    futures[uuid].add_done_callback(lambda _: window.release())

            async def chat_on() -> None:
                after = 0
                n = 0
                while after < CHATS_AFTER_STOP:
                    phase = "after" if exited.is_set() else "during"
                    uuid = f"gs-{run_id}-talker-{n}"
                    answer = await talker.round_trip("new_message", uuid=uuid, room=room_of[talker_user["id"]],
                                                     text=text(uuid))
                    chats.append((phase, answer))
                    after += phase == "after"
                    n += 1
                    await asyncio.sleep(CHAT_INTERVAL)  # the pace of a person chatting, not a wait

            async def waiting_reaches(count: int) -> None:
                while any(len(peer.waiting) != count for peer in peers):
                    await asyncio.sleep(POLL_INTERVAL)

            chatting = asyncio.create_task(chat_on())
            senders = [asyncio.create_task(pipeline(peer)) for peer in peers]
            await tally.reach(answered_before + ANSWERED_BEFORE_FREEZE)
            # Frozen with no answer on its way (none could come after, and the count below would be
            # a moment's): the clients pause, everything they sent is answered, then it freezes.
            sending.clear()
            await asyncio.wait_for(waiting_reaches(0), WAIT)
            os.kill(worker.pid, signal.SIGSTOP)
            sending.set()
            # Every window fills, and stays full: the requests in flight at the stop.
            await asyncio.wait_for(waiting_reaches(LEAVING_WINDOW), WAIT)
            in_flight_at_stop = sum(len(peer.waiting) for peer in peers)
            chats_before_stop = len(chats)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*(peer.closed.wait() for peer in peers)), WAIT)
            await asyncio.wait_for(asyncio.gather(*senders), WAIT)
            exit_code = await loop.run_in_executor(None, proc.wait, WAIT)
            exited.set()
            await asyncio.wait_for(chatting, WAIT)
            # A round trip after the talker's last broadcast: the hearer has every one of them by its end.
            assert (await hearer.round_trip("list_rooms")).frame["status"] == "success"
            # The close settled every request still waiting: each future is done.
            answers = {uuid: future.result() for uuid, future in futures.items()}
            return {
                "codes": [peer.close_code for peer in peers], "exit_code": exit_code, "answers": answers,
                "closed_at": {peer.user["username"]: peer.closed_at for peer in peers}, "sent": sent,
                "in_flight_at_stop": in_flight_at_stop, "chats": chats, "chats_before_stop": chats_before_stop,
                "heard": set(hearer.others), "talker_open": not talker.ws.closed,
            }

    async def retry(unanswered: dict[str, list[str]]) -> dict[str, Answer]:
        """The stopped gateway's clients reconnect to another gateway and retry what got no answer."""
        retries: dict[str, Answer] = {}
        async with aiohttp.ClientSession() as session:
            for user in leaving_users:
                again = await Peer.connect(session, e2e.gateway_b, user)
                for uuid in unanswered[user["username"]]:
                    retries[uuid] = await again.round_trip("new_message", uuid=uuid, room=room_of[user["id"]],
                                                           text=text(uuid))
        return retries

    result = asyncio.run(scenario())
    answers, sent = result["answers"], result["sent"]

    # Every client of the stopped gateway was told it was going away, requests in flight or not.
    assert result["codes"] == [1001] * LEAVING_CLIENTS
    assert result["exit_code"] == 0
    # Each request was answered before the close, or its client saw the close instead.
    for username, uuids in sent.items():
        for uuid in uuids:
            answer = answers[uuid]
            if answer.frame is not None:
                assert answer.frame["status"] == "success", answer.frame
                assert answer.answered_at <= result["closed_at"][username]
    answered = {uuid: answer.frame["message"]["id"] for uuid, answer in answers.items() if answer.frame is not None}
    unanswered = [uuid for uuid, answer in answers.items() if answer.frame is None]
    # What waited at the stop got no answer: the worker that had it was frozen.
    assert len(unanswered) == result["in_flight_at_stop"] == LEAVING_CLIENTS * LEAVING_WINDOW
    # Thawed, the worker stores each of them all the same; its replies find the stopped gateway gone.
    os.kill(worker.pid, signal.SIGCONT)

    def stored(uuids: list[str]) -> list[str]:
        return e2e.orm(lambda: list(ChatMessage.objects.filter(client_uuid__in=uuids)
                                    .values_list("client_uuid", flat=True)))

    wait_for(lambda: len(stored(unanswered)) >= len(unanswered), "the thawed worker's messages", WAIT, worker)
    assert e2e.stack.stop_process(worker) == 0
    assert sorted(stored(unanswered)) == sorted(unanswered)

    # The client of the other gateway chatted on: every request succeeded, during the stop and after.
    chats = result["chats"]
    failed_chats = [(phase, answer) for phase, answer in chats
                    if answer.frame is None or answer.frame["status"] != "success"]
    assert failed_chats == [], (len(chats), failed_chats)
    phases = [phase for phase, _ in chats]
    assert phases.count("during") > result["chats_before_stop"] and phases.count("after") == CHATS_AFTER_STOP
    assert result["talker_open"]
    assert {answer.frame["uuid"] for _, answer in chats} <= result["heard"]

    # Retried through the other gateway, each unanswered one is answered with the message stored
    # before: exactly one row per request, with the id its answer gave.
    retries = asyncio.run(retry({username: [uuid for uuid in uuids if answers[uuid].frame is None]
                                 for username, uuids in sent.items()}))
    assert all(answer.frame is not None and answer.frame["status"] == "success" for answer in retries.values())
    every_uuid = [uuid for uuids in sent.values() for uuid in uuids]
    rows = e2e.orm(lambda: list(
        ChatMessage.objects.filter(client_uuid__in=every_uuid).values_list("client_uuid", "id")))
    ids: dict[str, list[int]] = {}
    for uuid, pk in rows:
        ids.setdefault(uuid, []).append(pk)
    assert {uuid: len(pks) for uuid, pks in ids.items() if len(pks) != 1} == {}
    assert set(ids) == set(every_uuid)
    assert all(ids[uuid] == [pk] for uuid, pk in answered.items())
    assert all(ids[uuid] == [answer.frame["message"]["id"]] for uuid, answer in retries.items())

    during = [answer.elapsed for phase, answer in chats if phase == "during"]
    logger.info(
        "gateway stop: %d requests sent by %d clients, %d in flight at SIGTERM; %d answered before the close "
        "(1001 for all), %d unanswered, all stored once their worker thawed (retried through another "
        "gateway: each stored once); the other gateway's client: %d round trips during the stop (max %.3fs), "
        "%d after, all success",
        len(every_uuid), LEAVING_CLIENTS, result["in_flight_at_stop"], len(answered), len(unanswered),
        len(during), max(during), CHATS_AFTER_STOP)


# ---------------------------------------------------------------------------------------------
# 3. A client stops reading


SEND_QUEUE_SIZE = 16
POSTERS = 3
# Round trips each poster makes to measure the room's latency before the slow client exists.
BASELINE_ROUNDS = 30
# Bounds a test gone wrong: the slow client must be disconnected long before the posters send this many.
STALLED_ROUNDS_MAX = 2000
# 4000 characters of three UTF-8 bytes each: 12 KB a broadcast, to fill the slow client's buffers soon.
BIG_TEXT = "€" * 4000
# The bound on the room's latency while a member has stopped reading.
LATENCY_FACTOR = 5.0
LATENCY_SLACK = 0.2


def test_a_client_that_stops_reading_is_closed_with_4008_and_does_not_slow_the_room(e2e, own_gateway):
    # One process, so that the slow clients and the room share its event loop.
    _, port, name = own_gateway("slow", processes=1, SEND_QUEUE_SIZE=str(SEND_QUEUE_SIZE), RATE_LIMIT="1000",
                                RATE_LIMIT_BURST="1000")
    url = e2e.ws_url(port)
    data = e2e.fixtures(users=POSTERS + 2, rooms=1, room_size=POSTERS + 2)
    room_id = data["rooms"][0]["id"]
    # The late reader reads again once the gateway has given up on it; the sleeper never does.
    poster_users, (late_reader_user, sleeper_user) = data["users"][:POSTERS], data["users"][POSTERS:]
    run_id = secrets.token_hex(4)
    numbers = itertools.count()

    def queue_full(user: dict[str, Any]) -> str:
        return f"user={user['id']} outgoing queue full"

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            posters = [await Peer.connect(session, url, user) for user in poster_users]
            posted: dict[str, str] = {}  # uuid -> poster's username

            async def post(peer: Peer) -> Answer:
                uuid = f"slow-{run_id}-{next(numbers)}"
                posted[uuid] = peer.user["username"]
                answer = await peer.round_trip("new_message", uuid=uuid, room=room_id, text=BIG_TEXT)
                assert answer.frame is not None and answer.frame["status"] == "success", answer.frame
                return answer

            async def rounds(peer: Peer, count: int, stop: asyncio.Event | None = None) -> list[Answer]:
                answers = []
                for _ in range(count):
                    if stop is not None and stop.is_set():
                        break
                    answers.append(await post(peer))
                return answers

            async def stop_reading(user: dict[str, Any]) -> RawWebSocket:
                slow = await loop.run_in_executor(None, RawWebSocket, port)
                slow.send_json({"uuid": "slow-auth", "action": "authenticate", "token": user["token"]})
                auth = await loop.run_in_executor(None, slow.read_json)
                assert auth["uuid"] == "slow-auth" and auth["status"] == "success", auth
                return slow

            baseline = [a for answers in await asyncio.gather(*(rounds(peer, BASELINE_ROUNDS) for peer in posters))
                        for a in answers]

            late_reader = await stop_reading(late_reader_user)
            sleeper = await stop_reading(sleeper_user)
            try:
                # From here on neither reads anything, until the gateway has given up on them.
                stalled_from = loop.time()
                stop_posting = asyncio.Event()

                async def watch() -> dict[str, Any]:
                    for user in (late_reader_user, sleeper_user):
                        await wait_for_log(e2e.stack, name, queue_full(user), timeout=120)
                    disconnected_at = loop.time()
                    # The gateway's close frame waits behind what the client never read: read it all.
                    code, texts_read = await loop.run_in_executor(None, late_reader.read_until_close)
                    # The sleeper cannot take its close frame: the gateway aborts its socket, a bounded
                    # while later. The room keeps posting until then.
                    sleeper_conn = re.search(rf"conn=(\S+) {queue_full(sleeper_user)}", e2e.stack.log(name)).group(1)
                    await wait_for_log(e2e.stack, name, f"conn={sleeper_conn} closed (code",
                                       timeout=CLOSE_TIMEOUT + WAIT)
                    return {"disconnected_at": disconnected_at, "code": code, "texts_read": texts_read,
                            "sleeper_conn": sleeper_conn, "released_at": loop.time()}

                watcher = asyncio.create_task(watch())
                watcher.add_done_callback(lambda _: stop_posting.set())
                stalled_answers = await asyncio.gather(*(rounds(peer, STALLED_ROUNDS_MAX, stop_posting)
                                                         for peer in posters))
                assert watcher.done(), "the slow clients were never disconnected"
                watched = await watcher
                async with session.get(url.replace("/ws", "/healthz")) as response:
                    connections = (await response.json())["connections"]
            finally:
                late_reader.close()
                sleeper.close()

            # The room chats on, and every poster got every other poster's message.
            after = [await post(peer) for peer in posters]
            with contextlib.suppress(asyncio.TimeoutError):  # what is still missing then fails below
                await asyncio.gather(*(peer.heard({u for u, who in posted.items() if who != peer.user["username"]})
                                       for peer in posters))
            result = {
                "baseline": baseline, "stalled": [a for answers in stalled_answers for a in answers],
                "stalled_from": stalled_from, **watched,
                "after": after, "posters_open": [not p.ws.closed for p in posters],
                "missed": {peer.user["username"]: {u for u, who in posted.items() if who != peer.user["username"]}
                           - set(peer.others) for peer in posters},
                "connections": connections,
            }
        return result

    result = asyncio.run(scenario())
    log = e2e.stack.log(name)

    assert result["code"] == 4008
    assert f"conn={result['sleeper_conn']} close handshake (4008) took over" in log
    assert result["connections"] == POSTERS
    assert all(queue_full(user) not in log for user in poster_users)
    assert all(result["posters_open"])
    assert result["missed"] == {user["username"]: set() for user in poster_users}
    baseline = [a.elapsed for a in result["baseline"]]
    # While a member of the room is stalled: from the moment both stop reading until the gateway has
    # let the sleeper go (its queue filled, then its close handshake timed out).
    stalled = [a.elapsed for a in result["stalled"]
               if a.sent_at >= result["stalled_from"] and a.answered_at <= result["released_at"]]
    before_4008 = [a.elapsed for a in result["stalled"]
                   if a.sent_at >= result["stalled_from"] and a.answered_at <= result["disconnected_at"]]
    assert before_4008, "no round trip while the clients were stalled"
    bound = LATENCY_FACTOR * percentile(baseline, 0.95) + LATENCY_SLACK
    assert percentile(stalled, 0.95) < bound, (percentile(stalled, 0.95), bound)

    logger.info(
        "slow clients: disconnected with %d after %.2fs stalled (%d round trips of the room meanwhile); the late "
        "reader had %d broadcasts to read before the close frame; the sleeper's socket released %.2fs after "
        "(CLOSE_TIMEOUT %.0fs), %d round trips in all while stalled (p95 before the 4008 %.3fs); "
        "room latency p50 %.3fs -> %.3fs (x%.2f), p95 %.3fs -> %.3fs (x%.2f), max %.3fs -> %.3fs; "
        "bound on the stalled p95 %.3fs",
        result["code"], result["disconnected_at"] - result["stalled_from"], len(before_4008), result["texts_read"],
        result["released_at"] - result["disconnected_at"], CLOSE_TIMEOUT, len(stalled), percentile(before_4008, 0.95),
        percentile(baseline, 0.5), percentile(stalled, 0.5), percentile(stalled, 0.5) / percentile(baseline, 0.5),
        percentile(baseline, 0.95), percentile(stalled, 0.95), percentile(stalled, 0.95) / percentile(baseline, 0.95),
        max(baseline), max(stalled), bound)
