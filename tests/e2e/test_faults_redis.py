"""Redis faults end to end: Redis stopped and started again, pub/sub connections killed by Redis,
and no token in any log line. A stack of this module's own (its own Redis, two workers, one
gateway of two gunicorn processes), since stopping Redis would break every other test's stack.
Every test runs twice: on one Redis, and on a Redis Cluster of three masters (scripts/cluster.py)
whose masters all stop and start again where the one Redis does (skipped where no redis-server
7 or later is found)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import re
import secrets
import uuid
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

import aiohttp
import pytest
from django.core.management import call_command

from chat.models import ChatMessage
from bench.run import raise_fd_limit
from scripts.cluster import ClusterUnavailable, LocalCluster
from scripts.stack import Stack, free_port, wait_for
from websockets_gateway.keys import Keys
from tests.e2e.client import Client, ConnectionClosed, request_until_success
from tests.e2e.conftest import connect, run
from websockets_gateway import redis_clients

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

logger = logging.getLogger(__name__)

# Short, so that the outage test does not wait long for each timeout reply.
REQUEST_TIMEOUT = 3.0
# What a reply may take beyond REQUEST_TIMEOUT: scheduling and a local round trip, not a retry.
REPLY_MARGIN = 1.0
# The bound: a new_message succeeds within this long of Redis being back (or of the
# pub/sub connections being killed), without restarting any process.
RECOVERY_BOUND = 5.0
# A gateway writes its presence at least every PRESENCE_TTL / 3 seconds: within one TTL of
# Redis being back it has registered its users again.
PRESENCE_TTL = 6.0
# How long Redis stays down: long enough for every reconnect backoff (gateway subscriber,
# workers, presence writer: 0.1 s doubling up to a 2 s cap, times a jitter of 0.5..1.5) to
# reach its cap, 0.1+0.2+0.4+0.8+1.6 = 3.1 s at the mean jitter, so that the recovery bound
# below is met by the capped backoff and not by an early, short one.
OUTAGE_SECONDS = 8.0
# Clients send a round of requests this often while Redis is down.
OUTAGE_ROUND_INTERVAL = 1.0
# How long /healthz may take to notice that Redis is gone (its ping fails, or the subscription).
HEALTHZ_NOTICE_BOUND = 15.0
# How long one /healthz answer may take; a health check that hangs is as bad as a wrong one.
HEALTHZ_ANSWER_TIMEOUT = 10.0
# A client retrying a request sends it again (same uuid) when it has had no reply for this
# long, or this short pause after a `timeout` error.
RETRY_INTERVAL = 0.5
RETRY_PAUSE = 0.1
POLL_INTERVAL = 0.1
GATEWAY_PROCESSES = 2
# Connections opened until every gateway process holds some; the kernel decides which one
# accepts each, so a few more than the processes are usually needed.
MAX_CLIENTS = 24
CLIENTS_PER_PROCESS = 2
# A Redis restart under load: this many authenticated clients, two connections per user (a phone
# and a laptop), each user in one room of RESYNC_ROOM_SIZE.
RESYNC_CLIENTS = 1000
RESYNC_CONNECTIONS_PER_USER = 2
RESYNC_ROOM_SIZE = 5
# Connections opened and authenticated at once while the clients gather.
CONNECT_BATCH = 100
# The longest pause chat-client.js takes between a `resync` and its `sync` (its resyncJitter, 3 s),
# so that the catch-ups of a gateway's clients spread out; these clients do the same.
RESYNC_JITTER = 3.0
RESYNC_SEED = 18
# Clients that send a request while Redis is down: each is answered with `timeout`, and sent
# again with its uuid, on the same connection, once the client is told to resync.
GAP_REQUESTS = 20
# How long one client's catch-up (requests retried on `timeout`) may take, under the load of all.
CATCH_UP_BOUND = 30.0


@dataclass
class FaultStack:
    stack: Stack
    tag: str
    redis_url: str
    worker_topics: list[str]
    response_topic: str
    gateway: str
    # The gateway id of each gunicorn process (the one in its reply topic and in /healthz).
    gateway_ids: frozenset[str]
    db_blocker: Any
    # Every token this module handed out or tried: none may appear in a log.
    tokens: set[str] = field(default_factory=set)
    # The Redis Cluster the stack runs on, or None for one Redis.
    cluster: LocalCluster | None = None

    @property
    def healthz(self) -> str:
        return self.gateway.replace("/ws", "/healthz")

    def fixtures(self, users: int, rooms: int = 0, room_size: int = 2) -> dict[str, Any]:
        out = StringIO()
        with self.db_blocker.unblock():
            call_command("chat_fixtures", users=users, rooms=rooms, room_size=room_size, stdout=out)
        data = json.loads(out.getvalue())
        self.tokens.update(user["token"] for user in data["users"])
        return data

    def orm(self, work):
        with self.db_blocker.unblock():
            return work()

    def redis_client(self) -> redis_clients.SyncClient:
        return redis_clients.sync_client(self.redis_url, self.cluster is not None, socket_timeout=2,
                                         socket_connect_timeout=2)

    def ensure_redis(self) -> None:
        """After a test that failed during the outage: Redis back, for the tests after it."""
        if self.stack.redis_stopped:
            self.stack.restart_redis()

    def reply_topics(self) -> list[str]:
        """The gateways' reply topics that have a subscriber (on a cluster, a sharded one on any master)."""
        if self.cluster is None:
            with self.redis_client() as client:
                return sorted(name.decode() for name in client.pubsub_channels("gateway_reply:*"))
        found: set[str] = set()
        for port in self.cluster.ports:
            with self.cluster.node(port) as node:
                found.update(name.decode() for name in node.execute_command("PUBSUB SHARDCHANNELS", "gateway_reply:*"))
        return sorted(found)

    def kill_pubsub_connections(self) -> int:
        """CLIENT KILL TYPE pubsub on the Redis, or on every master; the connections killed."""
        if self.cluster is None:
            with self.redis_client() as client:
                return client.client_kill_filter(_type="pubsub")
        killed = 0
        for port in self.cluster.ports:
            with self.cluster.node(port) as node:
                killed += node.client_kill_filter(_type="pubsub")
        return killed

    def assert_every_subscription_killed(self, killed: int) -> None:
        """`killed` (from kill_pubsub_connections) is every subscription connection of the stack:
        one per worker and one per gateway process. On a cluster a gateway process has one per
        master that serves its reply topic or the response topic, and closes them all when one
        fails, so a master killed later may find some gone already: each worker's and at least one
        of the gateways', at most all."""
        if self.cluster is None:
            assert killed == len(self.worker_topics) + GATEWAY_PROCESSES
            return
        response_owner = self.cluster.owner_port(self.response_topic)
        most = len(self.worker_topics) + sum(
            len({response_owner, self.cluster.owner_port(Keys(self.response_topic).gateway_reply_topic(gateway_id))})
            for gateway_id in self.gateway_ids)
        assert len(self.worker_topics) < killed <= most, (killed, most)


def _own_redis(stack: Stack, kind: str, tmp_path_factory) -> tuple[str, LocalCluster | None]:
    """Start the stack's own Redis of `kind` (one Redis, or a cluster); skip where a cluster cannot run."""
    # Our own, always: one named by the environment may be shared, and we stop it.
    stack.env.pop("REDIS_URL", None)
    stack.env.pop("REDIS_CLUSTER", None)
    if kind == "redis":
        return stack.start_redis(free_port()), None
    try:
        cluster = LocalCluster.start(tmp_path_factory.mktemp("fault-cluster"))
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))
    return stack.use_cluster(cluster), cluster


@pytest.fixture(scope="module", params=["redis", "cluster"])
def faults(request, e2e_database_url, django_db_blocker, tmp_path_factory) -> FaultStack:
    tag = f"faults{secrets.token_hex(3)}"
    stack = Stack.create(
        log_dir=tmp_path_factory.mktemp("fault-stack-logs"),
        DATABASE_URL=e2e_database_url,
        WORKER_RESPONSE_TOPIC=f"{tag}_response",
        REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
        AUTH_TIMEOUT="30",
        PRESENCE_TTL=str(PRESENCE_TTL),
        # The most verbose level: the token test reads every line any process can write.
        LOG_LEVEL="DEBUG",
    )
    # Inherited by every process of the stack: the test with RESYNC_CLIENTS holds that many
    # sockets here and (spread) in the gateway processes.
    raise_fd_limit(RESYNC_CLIENTS)
    cluster = None
    try:
        redis_url, cluster = _own_redis(stack, request.param, tmp_path_factory)
        topics = [f"{tag}_worker_1", f"{tag}_worker_2"]
        stack.start_workers(topics)
        _, port = stack.start_gateway(processes=GATEWAY_PROCESSES, name=f"gateway-{tag}")
        faults = FaultStack(stack, tag, redis_url, topics, f"{tag}_response", f"http://127.0.0.1:{port}/ws",
                            frozenset(), django_db_blocker, cluster=cluster)
        # start_gateway waits for one process to answer; every one is ready once subscribed.
        wait_for(lambda: len(faults.reply_topics()) == GATEWAY_PROCESSES, "gateway processes", 30)
        faults.gateway_ids = frozenset(topic.split(":", 2)[2] for topic in faults.reply_topics())
        yield faults
    finally:
        stack.stop()
        if cluster is not None:
            cluster.stop()


def _room_and_members(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    room = data["rooms"][0]
    by_id = {user["id"]: user for user in data["users"]}
    return room, [by_id[pk] for pk in room["members"]]


async def _healthz(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any], float]:
    """One /healthz answer: its status, its body and how long it took.

    On a new TCP connection each time (a kept-alive one would always reach the same gunicorn
    process); `session` is not used for it.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    timeout = aiohttp.ClientTimeout(total=HEALTHZ_ANSWER_TIMEOUT)
    async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
                fresh.get(url, timeout=timeout) as response):
        body = await response.json()
        return response.status, body, loop.time() - started


async def _healthz_until(session: aiohttp.ClientSession, faults: FaultStack, status: int,
                         bound: float) -> tuple[float, float]:
    """Poll /healthz until the latest answer of every gateway process has `status` (gunicorn
    hands each poll to one of them); return the time that took and the slowest answer seen."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    latest: dict[str, int] = {}
    slowest = 0.0
    while True:
        got, body, took = await _healthz(session, faults.healthz)
        assert body["gateway_id"] in faults.gateway_ids, body
        assert body["redis"] is (got == 200), body
        latest[body["gateway_id"]] = got
        slowest = max(slowest, took)
        if latest.keys() == faults.gateway_ids and set(latest.values()) == {status}:
            return loop.time() - started, slowest
        if loop.time() - started > bound:
            raise AssertionError(f"/healthz by gateway process {latest}, not all {status}, after {bound}s")
        await asyncio.sleep(POLL_INTERVAL)


async def _connections_by_process(session: aiohttp.ClientSession, faults: FaultStack) -> dict[str, int]:
    """The open connections of every gateway process, from one fresh /healthz answer of each."""
    counts: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEALTHZ_NOTICE_BOUND
    while counts.keys() != faults.gateway_ids:
        assert loop.time() < deadline, f"/healthz answered only by {sorted(counts)}"
        _, body, _ = await _healthz(session, faults.healthz)
        counts[body["gateway_id"]] = body["connections"]
    return counts


async def _clients_on_every_process(session: aiohttp.ClientSession, faults: FaultStack,
                                    users: list[dict[str, Any]]) -> list[Client]:
    """Authenticated clients, the users in turn, until every gateway process holds a few of them."""
    before = await _connections_by_process(session, faults)
    clients: list[Client] = []
    while True:
        clients.append(await connect(session, faults.gateway, users[len(clients) % len(users)]))
        counts = await _connections_by_process(session, faults)
        if all(counts[gateway_id] - before[gateway_id] >= CLIENTS_PER_PROCESS for gateway_id in counts):
            return clients
        assert len(clients) < MAX_CLIENTS, f"{len(clients)} connections, by gateway process {counts}"


async def _timed_replies(client: Client, frames: list[dict[str, Any]], timeout: float) -> dict[str, tuple[dict, float]]:
    """Send `frames` back to back, as a client that does not wait would; return each reply by
    uuid with the seconds from its own frame's send to its arrival."""
    loop = asyncio.get_running_loop()
    sent_at: dict[str, float] = {}
    for frame in frames:
        sent_at[frame["uuid"]] = loop.time()
        await client.send(frame)
    replies: dict[str, tuple[dict, float]] = {}
    while len(replies) < len(frames):
        # Every frame of ours matches, so none goes to the backlog: the arrival time is now.
        reply = await client.expect(lambda f: f.get("uuid") in sent_at and f.get("uuid") not in replies, timeout)
        replies[reply["uuid"]] = (reply, loop.time() - sent_at[reply["uuid"]])
    return replies


async def _send_until_success(client: Client, frame: dict[str, Any], bound: float) -> tuple[dict[str, Any], int]:
    """Send `frame` again, same uuid, until a success reply, for at most `bound` seconds, as a
    client would; the errors on the way may only be `timeout`. Return the reply and the attempts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    attempts = 0
    errors: list[dict[str, Any]] = []

    def answer(reply: dict[str, Any]) -> bool:
        return reply.get("uuid") == frame["uuid"] and reply.get("action") == frame["action"]

    while True:
        await client.send(frame)
        attempts += 1
        # A reply to an earlier attempt counts as well: they all carry the same uuid.
        remaining = min(RETRY_INTERVAL, deadline - loop.time())
        try:
            reply = await client.expect(answer, max(remaining, 0.001))
        except ConnectionClosed:
            raise
        except (AssertionError, TimeoutError):
            reply = None  # no reply in this interval: send again
        if reply is not None:
            if reply["status"] == "success":
                return reply, attempts
            assert reply["error_code"] == "timeout", reply
            errors.append(reply)
            await asyncio.sleep(RETRY_PAUSE)
        if loop.time() >= deadline:
            raise AssertionError(f"{frame['action']} not successful within {bound}s after {attempts} attempts; "
                                 f"last errors: {errors[-3:]}")


def _store_in_thread(faults: FaultStack, user_pk: int, room_id: str, text: str) -> int:
    """Store a message through the ORM from a thread of its own (the test's loop is async)."""
    return _store_many_in_thread(faults, [(user_pk, room_id)], text)[0]


def _store_many_in_thread(faults: FaultStack, authors_and_rooms: list[tuple[int, str]], text: str) -> list[int]:
    """Store one message per (author, room) through the ORM, as the REST API stores them, with no
    live delivery; return their ids."""
    from django.db import connection

    def store() -> list[int]:
        try:
            return [ChatMessage.objects.create(user_id=user_pk, room_id=room_id, text=text).pk
                    for user_pk, room_id in authors_and_rooms]
        finally:
            connection.close()

    return faults.orm(store)


def _ids_in_thread(faults: FaultStack, room_id: str, after: int) -> list[int]:
    from django.db import connection

    def ids() -> list[int]:
        try:
            return list(ChatMessage.objects.filter(room_id=room_id, id__gt=after).order_by("id")
                        .values_list("id", flat=True))
        finally:
            connection.close()

    return faults.orm(ids)


async def _request_until_success(client: Client, frame: dict[str, Any], bound: float) -> tuple[dict[str, Any], int]:
    """`request_until_success` (tests/e2e/client.py), each reply awaited for up to its REQUEST_TIMEOUT."""
    return await request_until_success(client, frame, bound, REQUEST_TIMEOUT + REPLY_MARGIN, RETRY_PAUSE)


async def _metric_by_process(faults: FaultStack, name: str) -> dict[str, float]:
    """One counter (by its sample name, labelled only with gateway_id) of every gateway process,
    from one /metrics answer of each (on a new TCP connection each time, as `_healthz`)."""
    url = faults.gateway.replace("/ws", "/metrics")
    sample = re.compile(rf'^{re.escape(name)}{{gateway_id="([^"]+)"}} (\S+)$', re.MULTILINE)
    values: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEALTHZ_NOTICE_BOUND
    while values.keys() != faults.gateway_ids:
        assert loop.time() < deadline, f"/metrics answered only by {sorted(values)}"
        async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
                    fresh.get(url, timeout=aiohttp.ClientTimeout(total=HEALTHZ_ANSWER_TIMEOUT)) as response):
            text = await response.text()
        [(gateway_id, value)] = sample.findall(text)
        values[gateway_id] = float(value)
    return values


def _is_resync(frame: dict[str, Any]) -> bool:
    """The gateway's own frame after its subscription came back (no uuid: it answers no request)."""
    return frame.get("action") == "resync" and "uuid" not in frame


async def _expect_resync(client: Client, bound: float) -> dict[str, Any]:
    """The client's `resync` frame, within `bound`; fails (ConnectionClosed) if it is closed instead."""
    frame = await client.expect(_is_resync, bound)
    assert isinstance(frame.get("reason"), str) and frame["reason"], frame
    return frame


async def _online_until(client: Client, room_id: str, expected: list[str], bound: float) -> float:
    """Poll who_is_online until it names exactly `expected`; return the seconds it took.
    Errors (`timeout` while the bus recovers) are polled through, within the bound."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    last: dict[str, Any] | None = None
    while True:
        last = await client.request("who_is_online", timeout=REQUEST_TIMEOUT + REPLY_MARGIN, room=room_id)
        if last["status"] == "success" and last["online"] == expected:
            return loop.time() - started
        if last["status"] == "error":
            assert last["error_code"] == "timeout", last
        if loop.time() - started > bound:
            raise AssertionError(f"who_is_online is {last} after {bound}s, not {expected}")
        await asyncio.sleep(POLL_INTERVAL)


def _subscriber_counts(client: redis_clients.SyncClient, channels: list[str]) -> dict[str, int]:
    return {channel: redis_clients.subscriber_count(client, channel) for channel in channels}


def _expected_subscribers(faults: FaultStack) -> dict[str, int]:
    """PUBSUB NUMSUB of a whole stack: each worker on its topic, every gateway process on its
    reply topic and on the shared response topic."""
    return {**{topic: 1 for topic in faults.worker_topics},
            faults.response_topic: GATEWAY_PROCESSES,
            **{Keys(faults.response_topic).gateway_reply_topic(gateway_id): 1 for gateway_id in faults.gateway_ids}}


async def _subscribers_until(client: redis_clients.SyncClient, expected: dict[str, int], bound: float) -> float:
    """Poll PUBSUB NUMSUB until it is `expected`; return the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (counts := _subscriber_counts(client, list(expected))) != expected:
        if loop.time() - started > bound:
            raise AssertionError(f"subscribers {counts} after {bound}s, not {expected}")
        await asyncio.sleep(POLL_INTERVAL)
    return loop.time() - started


def _outage_burst(prefix: str, number: int, room_id: str, user: dict[str, Any]) -> list[dict[str, Any]]:
    """One frame of every worker action, and a re-authenticate, from client `number`."""
    return [
        {"uuid": f"{prefix}-message-{number}", "action": "new_message", "room": room_id, "text": "in the outage"},
        {"uuid": f"{prefix}-list-{number}", "action": "list_rooms"},
        {"uuid": f"{prefix}-online-{number}", "action": "who_is_online", "room": room_id},
        {"uuid": f"{prefix}-select-{number}", "action": "select_room", "room": room_id},
        {"uuid": f"{prefix}-typing-{number}", "action": "typing", "room": room_id},
        {"uuid": f"{prefix}-sync-{number}", "action": "sync", "after": 0},
        {"uuid": f"{prefix}-auth-{number}", "action": "authenticate", "token": user["token"]},
    ]


def test_redis_goes_away_and_comes_back(faults):
    data = faults.fixtures(users=2, rooms=1, room_size=2)
    room, (alice, bob) = _room_and_members(data)
    both = sorted([alice["username"], bob["username"]])
    run_id = uuid.uuid4().hex
    # The first client's message of the outage's first round: answered `timeout` then, retried
    # with its uuid once Redis is back.
    recovery = _outage_burst(f"outage-{run_id}-0", 0, room["id"], alice)[0]
    recovery_uuid = recovery["uuid"]
    bound = REQUEST_TIMEOUT + REPLY_MARGIN
    figures: dict[str, float] = {}

    async def scenario(session):
        clients = await _clients_on_every_process(session, faults, [alice, bob])
        users = [alice if number % 2 == 0 else bob for number in range(len(clients))]
        sender = clients[0]
        before = await sender.ok("new_message", room=room["id"], text="before the outage")
        await _online_until(sender, room["id"], both, PRESENCE_TTL)
        await _healthz_until(session, faults, 200, HEALTHZ_NOTICE_BOUND)
        loop = asyncio.get_running_loop()

        # Requests in flight as Redis goes: each is answered all the same, by a worker if it got
        # there in time, else with `timeout`, within the bound. (Not `typing`: when it succeeds,
        # the typist gets no reply at all.)
        crossing = [[frame for frame in _outage_burst(f"crossing-{run_id}", number, room["id"], user)
                     if frame["action"] != "typing"] for number, user in enumerate(users)]
        answers = [asyncio.create_task(_timed_replies(client, burst, bound + 5))
                   for client, burst in zip(clients, crossing)]
        assert await asyncio.to_thread(faults.stack.stop_redis) == 0
        stopped = loop.time()
        for burst, replies in zip(crossing, await asyncio.gather(*answers)):
            for frame in burst:
                reply, took = replies[frame["uuid"]]
                assert reply["status"] == "success" or reply["error_code"] == "timeout", reply
                assert took <= bound, f"{frame['action']} answered after {took:.2f}s, over {bound}s"
                figures["crossing_slowest"] = max(figures.get("crossing_slowest", 0.0), took)

        figures["healthz_503"], figures["healthz_503_slowest"] = await _healthz_until(
            session, faults, 503, HEALTHZ_NOTICE_BOUND)

        # While Redis is down, round after round: every request of every connected client is
        # answered with `timeout`, each within the bound; none hangs.
        rounds = 0
        while rounds < 2 or loop.time() - stopped < OUTAGE_SECONDS:
            bursts = [_outage_burst(f"outage-{run_id}-{rounds}", number, room["id"], user)
                      for number, user in enumerate(users)]
            round_started = loop.time()
            results = await asyncio.gather(*(_timed_replies(client, burst, bound + 5)
                                              for client, burst in zip(clients, bursts)))
            for burst, replies in zip(bursts, results):
                for frame in burst:
                    reply, took = replies[frame["uuid"]]
                    assert reply["status"] == "error" and reply["error_code"] == "timeout", reply
                    assert reply["action"] == frame["action"]
                    assert took <= bound, f"{frame['action']} answered after {took:.2f}s, over {bound}s"
                    figures["outage_slowest"] = max(figures.get("outage_slowest", 0.0), took)
            figures["outage_requests"] = figures.get("outage_requests", 0) + sum(map(len, bursts))
            # The gateway answers ping itself: it needs no Redis.
            assert (await sender.request("ping", timeout=bound))["status"] == "success"
            rounds += 1
            # Pacing of the rounds, not a wait for anything.
            await asyncio.sleep(max(0.0, round_started + OUTAGE_ROUND_INTERVAL - loop.time()))
        figures["outage"] = loop.time() - stopped

        # A message stored while Redis was down, as the REST API stores one then: its live
        # delivery failed, so the clients must find it through `sync`.
        newest_seen = before["message"]["id"]
        stored_meanwhile = await asyncio.to_thread(_store_in_thread, faults, bob["id"], room["id"],
                                                   "stored during the outage")

        # Back on the same port; no gateway or worker is restarted.
        await asyncio.to_thread(faults.stack.restart_redis)
        back = loop.time()
        # Not only the worker that answers first: every worker and every gateway process comes
        # back, by itself, within the bound (a worker that never came back would go unnoticed by
        # the requests, the gateway sending them all to the other one).
        admin = faults.redis_client()
        resubscribed = asyncio.create_task(_subscribers_until(admin, _expected_subscribers(faults), RECOVERY_BOUND))
        # Every gateway process missed what was published while it was not subscribed, so each
        # tells its authenticated connections so with `resync` once it is subscribed again, and
        # closes none of them (a close would fail the wait) ...
        await asyncio.gather(*(_expect_resync(client, RECOVERY_BOUND + REPLY_MARGIN) for client in clients))
        figures["resync"] = loop.time() - back
        # ... and a client, on the connection it holds, retries what got `timeout` with the same
        # uuid (a message of the outage), and syncs from the newest message it has.
        sender, receiver = clients[0], clients[1]
        assert users[0] is alice and users[1] is bob
        reply, attempts = await _send_until_success(sender, recovery, RECOVERY_BOUND)
        figures["first_success"] = loop.time() - back
        figures["attempts"] = attempts
        assert figures["first_success"] <= RECOVERY_BOUND
        assert reply["message"]["text"] == recovery["text"]
        synced, _ = await _send_until_success(
            receiver, {"uuid": f"sync-{run_id}", "action": "sync", "after": newest_seen}, RECOVERY_BOUND)
        stored = await asyncio.to_thread(_ids_in_thread, faults, room["id"], newest_seen)
        # Everything stored since, in id order, once each: the crossing burst's messages that got
        # through, the one stored during the outage, the retried one.
        assert [m["id"] for m in synced["messages"]] == stored
        assert stored_meanwhile in stored and reply["message"]["id"] in stored
        assert synced["has_more"] is False

        figures["healthz_200"], figures["healthz_200_slowest"] = await _healthz_until(
            session, faults, 200, RECOVERY_BOUND)
        try:
            figures["subscribed"] = await resubscribed
        finally:
            admin.close()
        # Subscribed again everywhere, so a message now reaches the other member live.
        after = await sender.ok("new_message", room=room["id"], text="everyone hears this")
        await receiver.expect(lambda f: f.get("action") == "new_message"
                              and f.get("message", {}).get("id") == after["message"]["id"])
        # Redis came back empty: every gateway process must register its users again by itself.
        await _online_until(sender, room["id"], both, PRESENCE_TTL)
        figures["presence"] = loop.time() - back
        figures["clients"] = len(clients)
        # One resync each, for the one gap; every connection still open.
        await asyncio.gather(*(client.drain() for client in clients))
        assert [client.unread(_is_resync) for client in clients] == [[]] * len(clients)
        assert not any(client.ws.closed for client in clients)

    try:
        run(scenario)
    finally:
        faults.ensure_redis()
    logger.info("redis outage (%d clients on %d gateway processes): healthz 503 after %.2fs (slowest answer "
                "%.3fs); %d requests in %.1fs of outage, slowest reply %.3fs (in flight at the stop: %.3fs; "
                "bound %.1fs); Redis back -> every client told to resync after %.2fs (none closed), new_message "
                "ok (retried on the same connection) "
                "after %.2fs (%d attempts), healthz 200 on every "
                "process %.2fs later, every worker and gateway process subscribed after %.2fs, who_is_online "
                "right after %.2fs",
                figures["clients"], GATEWAY_PROCESSES, figures["healthz_503"], figures["healthz_503_slowest"],
                figures["outage_requests"], figures["outage"], figures["outage_slowest"],
                figures["crossing_slowest"], bound, figures["resync"], figures["first_success"], figures["attempts"],
                figures["healthz_200"], figures["subscribed"], figures["presence"])
    # The retries were stored once; of what was sent while Redis was down, only the one retried
    # afterwards was stored.
    assert faults.orm(lambda: ChatMessage.objects.filter(client_uuid=recovery_uuid).count()) == 1
    assert faults.orm(lambda: ChatMessage.objects.filter(client_uuid__startswith=f"outage-{run_id}").count()) == 1


def test_pubsub_connections_killed_by_redis_are_resubscribed(faults):
    data = faults.fixtures(users=2, rooms=1, room_size=2)
    room, (alice, bob) = _room_and_members(data)
    expected = _expected_subscribers(faults)
    kill_uuid = f"after-kill-{uuid.uuid4().hex}"
    admin = faults.redis_client()

    async def scenario(session):
        # The whole stack subscribed first (after the outage test, a worker may still be in its
        # backoff): every subscription killed below is then one that must come back.
        await _subscribers_until(admin, expected, RECOVERY_BOUND)
        # This Redis serves this module's stack alone: no other gateway's reply topic.
        assert faults.reply_topics() == sorted(topic for topic in expected if topic.startswith("gateway_reply:"))
        sender = await connect(session, faults.gateway, alice)
        receiver = await connect(session, faults.gateway, bob)
        await sender.ok("new_message", room=room["id"], text="before the kill")

        loop = asyncio.get_running_loop()
        killed = faults.kill_pubsub_connections()
        # Every subscriber back, by itself: both workers and every gateway process.
        resubscribed = asyncio.create_task(_subscribers_until(admin, expected, RECOVERY_BOUND))
        killed_at = loop.time()
        # One subscribing connection per worker and per gateway process, all of them gone.
        faults.assert_every_subscription_killed(killed)

        # Each gateway process, subscribed again, tells its authenticated clients that they may
        # have missed something: `resync`, on the connections they hold. They retry what got no
        # success with the same uuid there.
        await asyncio.gather(_expect_resync(sender, RECOVERY_BOUND), _expect_resync(receiver, RECOVERY_BOUND))
        frame = {"uuid": kill_uuid, "action": "new_message", "room": room["id"], "text": "after the kill"}
        _, attempts = await _send_until_success(sender, frame, RECOVERY_BOUND)
        first_success = loop.time() - killed_at
        assert first_success <= RECOVERY_BOUND

        resubscribed = await resubscribed
        await _healthz_until(session, faults, 200, RECOVERY_BOUND)
        # And delivers: a message now reaches the other member, on whichever process.
        after = await sender.ok("new_message", room=room["id"], text="everyone hears this")
        await receiver.expect(lambda f: f.get("action") == "new_message"
                              and f.get("message", {}).get("id") == after["message"]["id"])
        logger.info("client kill: %d pub/sub connections killed; new_message ok after %.2fs (%d attempts); "
                    "every topic subscribed again after %.2fs", killed, first_success, attempts, resubscribed)

    try:
        run(scenario)
    finally:
        admin.close()
    # The retries were stored once.
    assert faults.orm(lambda: ChatMessage.objects.filter(client_uuid=kill_uuid).count()) == 1


# How long, and how often, requests are published straight to the worker topics after a kill.
PROBE_SECONDS = 1.0
PROBE_INTERVAL = 0.01


def test_every_request_a_killed_worker_subscription_accepted_is_answered(faults):
    """After its connection is killed, a worker's subscription must be either gone or read.

    redis-py reconnects a broken pub/sub connection and subscribes it again by itself before it
    raises the error; a worker that then waits out its backoff before closing that subscription
    holds its topic without reading it: a request published there counts as received (so the
    gateway tries no other worker) and is never answered. Published like the gateway does, in a
    tight loop from the kill on, every request that Redis says a subscriber got must be answered.
    """
    data = faults.fixtures(users=1)
    user = data["users"][0]
    expected = _expected_subscribers(faults)
    probe_topic = f"{faults.tag}_probe_replies"
    admin = faults.redis_client()
    listener = redis_clients.subscription(admin)

    async def scenario():
        loop = asyncio.get_running_loop()
        await _subscribers_until(admin, expected, RECOVERY_BOUND)
        faults.assert_every_subscription_killed(faults.kill_pubsub_connections())
        listener.subscribe(probe_topic)  # after the kill, which would take it too
        accepted: set[str] = set()
        refused = 0
        started = loop.time()
        for number in itertools.count():
            if loop.time() - started > PROBE_SECONDS:
                break
            for topic in faults.worker_topics:
                request_id = f"probe:{number}:{topic}"
                request = {"uuid": request_id, "action": "list_rooms", "session_data": {"user_pk": user["id"]},
                           "request_id": request_id, "reply_to": probe_topic}
                if redis_clients.publish(admin, topic, json.dumps(request)):
                    accepted.add(request_id)
                else:
                    refused += 1
            await asyncio.sleep(PROBE_INTERVAL)
        answered: set[str] = set()
        deadline = loop.time() + REQUEST_TIMEOUT
        while not accepted <= answered and loop.time() < deadline:
            message = listener.get_message(timeout=0.1)
            if message is not None and message["type"] == "message":
                envelope = json.loads(message["data"])
                assert envelope["type"] == "success_response", envelope
                answered.add(envelope["request_id"])
        lost = sorted(accepted - answered, key=lambda rid: int(rid.split(":")[1]))
        assert not lost, f"{len(lost)} of {len(accepted)} accepted requests never answered, e.g. {lost[:3]}"
        # And the stack is whole again, for the tests after this one.
        await _subscribers_until(admin, expected, RECOVERY_BOUND)
        logger.info("worker subscriptions killed: %d requests published in %.1fs, %d accepted and all answered, "
                    "%d found no subscriber", len(accepted) + refused, PROBE_SECONDS, len(accepted), refused)

    try:
        asyncio.run(scenario())
    finally:
        listener.close()
        admin.close()


def test_a_redis_restart_closes_none_of_1000_clients_and_each_catches_up_with_sync(faults):
    """Redis restarts under RESYNC_CLIENTS authenticated clients: no connection is closed; each
    gets one `resync`, and the messages stored while its gateway process was not subscribed (in
    half of the rooms: their members missed a live delivery) reach it through `sync` from the
    newest id it had, on the same connection, its catch-up spread out as the page's is."""
    users_count = RESYNC_CLIENTS // RESYNC_CONNECTIONS_PER_USER
    data = faults.fixtures(users=users_count, rooms=users_count // RESYNC_ROOM_SIZE, room_size=RESYNC_ROOM_SIZE)
    room_of = {pk: room["id"] for room in data["rooms"] for pk in room["members"]}
    assert len(room_of) == users_count  # every user in exactly one room
    # Client i is users[i]: every user twice over.
    users = data["users"] * RESYNC_CONNECTIONS_PER_USER
    run_id = uuid.uuid4().hex
    rng = random.Random(RESYNC_SEED)
    pauses = [rng.uniform(0, RESYNC_JITTER) for _ in users]
    figures: dict[str, float] = {}

    async def authenticated(session: aiohttp.ClientSession, index: int) -> Client:
        client = await Client.connect(session, faults.gateway)
        frame = {"uuid": f"auth-{run_id}-{index}", "action": "authenticate", "token": users[index]["token"]}
        await _request_until_success(client, frame, CATCH_UP_BOUND)
        return client

    async def scenario(_):
        # A WebSocket holds its connection for good: no pool limit (aiohttp's default is 100).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            loop = asyncio.get_running_loop()
            started = loop.time()
            clients: list[Client] = []
            for first in range(0, len(users), CONNECT_BATCH):
                clients += await asyncio.gather(*(authenticated(session, index)
                                                  for index in range(first, min(first + CONNECT_BATCH, len(users)))))
            figures["connect"] = loop.time() - started

            # Live before the restart: a message in every room, from its first member's first
            # client; every other client of the room receives it. Each client's newest id.
            poster: dict[str, int] = {}
            for index, user in enumerate(users):
                poster.setdefault(room_of[user["id"]], index)
            posted = await asyncio.gather(*(
                _request_until_success(clients[index], {"uuid": f"before-{run_id}-{index}", "action": "new_message",
                                                        "room": room_id, "text": "before the restart"},
                                       CATCH_UP_BOUND)
                for room_id, index in poster.items()))
            before = {room_id: reply["message"]["id"] for room_id, (reply, _) in zip(poster, posted)}
            newest = [before[room_of[user["id"]]] for user in users]
            await asyncio.gather(*(
                client.expect(lambda f, message_id=message_id: f.get("action") == "new_message"
                              and f.get("message", {}).get("id") == message_id)
                for index, (client, message_id) in enumerate(zip(clients, newest)) if index not in poster.values()))
            reconnects = await _metric_by_process(faults, "chat_gateway_redis_reconnects_total")

            assert await asyncio.to_thread(faults.stack.stop_redis) == 0
            # Every gateway process notices that its subscription is gone ...
            deadline = loop.time() + HEALTHZ_NOTICE_BOUND
            while any(count <= reconnects[gateway_id] for gateway_id, count in
                      (await _metric_by_process(faults, "chat_gateway_redis_reconnects_total")).items()):
                assert loop.time() < deadline, "a gateway process did not notice that Redis is gone"
                await asyncio.sleep(POLL_INTERVAL)
            # ... and meanwhile a message is stored in every other room, as the REST API stores
            # one while Redis is down: its live delivery fails, the members' clients miss it.
            rooms = {room["id"]: room for room in data["rooms"]}
            missed_rooms = list(before)[::2]
            await asyncio.to_thread(_store_many_in_thread, faults,
                                    [(rooms[room_id]["members"][0], room_id) for room_id in missed_rooms],
                                    "stored while Redis was down")
            # Requests sent during the gap are answered with `timeout`, as ever.
            gap_frames = [{"uuid": f"gap-{run_id}-{index}", "action": "list_rooms"} for index in range(GAP_REQUESTS)]
            await asyncio.gather(*(client.send(frame) for client, frame in zip(clients, gap_frames)))
            gap_replies = await asyncio.gather(*(
                client.expect(lambda f, frame=frame: f.get("uuid") == frame["uuid"], REQUEST_TIMEOUT + REPLY_MARGIN)
                for client, frame in zip(clients, gap_frames)))
            assert all(reply["status"] == "error" and reply["error_code"] == "timeout" for reply in gap_replies)

            # What each room's members must get through `sync`: what was stored after the message
            # they saw live, the one stored during the gap in half of the rooms, nothing elsewhere.
            expected = {room_id: await asyncio.to_thread(_ids_in_thread, faults, room_id, before[room_id])
                        for room_id in before}
            assert all(len(expected[room_id]) == (room_id in missed_rooms) for room_id in before)

            await asyncio.to_thread(faults.stack.restart_redis)
            back = loop.time()

            async def catch_up(index: int) -> tuple[float, float, list[int]]:
                client = clients[index]
                await _expect_resync(client, RECOVERY_BOUND + REPLY_MARGIN)
                told = loop.time() - back
                if index < GAP_REQUESTS:
                    await _request_until_success(client, gap_frames[index], CATCH_UP_BOUND)
                await asyncio.sleep(pauses[index])
                frame = {"uuid": f"sync-{run_id}-{index}", "action": "sync", "after": newest[index]}
                reply, _ = await _request_until_success(client, frame, CATCH_UP_BOUND)
                assert reply["has_more"] is False
                return told, loop.time() - back, [message["id"] for message in reply["messages"]]

            caught_up = await asyncio.gather(*(catch_up(index) for index in range(len(clients))))
            for user, (_, _, synced) in zip(users, caught_up):
                assert synced == expected[room_of[user["id"]]], (user, synced)
            figures["missed"] = sum(1 for _, _, synced in caught_up if synced)
            told = [told for told, _, _ in caught_up]
            figures["told_first"], figures["told_last"] = min(told), max(told)
            figures["caught_up"] = max(done for _, done, _ in caught_up)

            # One resync each, for the one gap; every connection still open, and live again.
            await asyncio.gather(*(client.drain() for client in clients))
            assert sum(len(client.unread(_is_resync)) for client in clients) == 0
            assert not any(client.ws.closed for client in clients)
            room_id = missed_rooms[0]
            after = await clients[poster[room_id]].ok("new_message", room=room_id, text="after the restart")
            listeners = [client for index, (client, user) in enumerate(zip(clients, users))
                         if room_of[user["id"]] == room_id and index != poster[room_id]]
            await asyncio.gather(*(client.expect(lambda f: f.get("message", {}).get("id") == after["message"]["id"])
                                   for client in listeners))
            await asyncio.gather(*(client.close() for client in clients))

    try:
        run(scenario)
    finally:
        faults.ensure_redis()
    logger.info("redis restart under %d clients (%d users, %d gateway processes): connected and authenticated "
                "in %.1fs; Redis back -> resync on every connection after %.2f..%.2fs, none closed; %d clients "
                "had missed a message and got it with sync, all caught up (jitter up to %.0fs) after %.2fs",
                RESYNC_CLIENTS, users_count, GATEWAY_PROCESSES, figures["connect"], figures["told_first"],
                figures["told_last"], figures["missed"], RESYNC_JITTER, figures["caught_up"])
    assert figures["missed"] == RESYNC_CLIENTS // 2


def test_no_token_in_any_log_line(faults):
    data = faults.fixtures(users=1)
    user = data["users"][0]
    # Shaped like a real token (40 hex digits), so that nothing can tell it from one.
    bad_token = secrets.token_hex(20)
    faults.tokens.add(bad_token)

    async def scenario(session):
        client = await connect(session, faults.gateway)
        bad = await client.request("authenticate", token=bad_token)
        assert bad["status"] == "error" and bad["error_code"] == "invalid_token"
        await client.authenticate(user)
        assert (await client.ok("list_rooms"))["rooms"] == []

    run(scenario)
    # Stopped first, so that every process has written its last line (shut-down included).
    faults.stack.stop()
    logs = {path.name: path.read_text(errors="replace")
            for path in sorted(faults.stack.log_dir.rglob("*")) if path.is_file()}
    # These are the logs of this stack's processes: every worker named its topic, the gateway
    # its processes' ids.
    assert all(any(topic in text for text in logs.values()) for topic in faults.worker_topics), sorted(logs)
    assert all(any(gateway_id in text for text in logs.values()) for gateway_id in faults.gateway_ids)
    assert len(faults.tokens) >= 3
    for name, text in logs.items():
        for token in faults.tokens:
            assert token not in text, f"a token appears in {name}"
