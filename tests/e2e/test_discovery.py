"""Worker discovery end to end: a gateway without WORKER_PROCESS_TOPICS and workers without topics.

The workers take topics of their own and register them in Redis; the gateway chooses among the
live ones. A worker stopped with SIGTERM leaves the registry at once; one that stops answering
(frozen, then killed: a lost host) leaves it when its heartbeat expires, and the requests it took
meanwhile are answered `timeout` and retried by the client, with the same uuid, on the other.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from chat.models import ChatMessage
from scripts.stack import Stack, wait_for
from tests.e2e.conftest import connect, run
from websockets_gateway import redis_clients
from websockets_gateway.keys import Keys

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Short, so that a worker that stops answering leaves the choice soon (WORKER_TTL, at least 1 s).
WORKER_TTL = "2"
# A request published to the frozen worker waits this long for its `timeout`.
REQUEST_TIMEOUT = "2"
# Requests sent at once: enough that some certainly go to each of two workers (the chance that
# none goes to one of them is 2 ** -(REQUESTS - 1)).
REQUESTS = 16
# Bounds of the waits on conditions below, for a busy machine; none is a measured figure.
LEAVES_WITHIN = 20.0
ANSWER_WAIT = 30.0


def registry(redis_url: str, keys: Keys, cluster: bool) -> tuple[set[str], set[str]]:
    """The registered topics, and those of them with a live heartbeat."""
    client = redis_clients.sync_client(redis_url, cluster)
    try:
        topics = {member.decode() for member in client.smembers(keys.worker_topics)}
        live = {topic for topic in topics if client.exists(keys.worker_heartbeat(topic))}
    finally:
        client.close()
    return topics, live


class DiscoveryStack:
    def __init__(self, stack: Stack, keys: Keys, workers: dict[str, Any], url: str) -> None:
        self.stack = stack
        self.keys = keys
        # The workers' processes by the topic each took.
        self.workers = workers
        self.url = url

    def registry(self) -> tuple[set[str], set[str]]:
        return registry(self.stack.env["REDIS_URL"], self.keys, self.stack.redis_cluster)

    def handled_by(self, topic: str) -> int:
        name = next(name for name, proc in self.stack.processes if proc is self.workers[topic])
        return self.stack.log(name).count("request handled")


@pytest.fixture
def discovery_stack(e2e, e2e_database_url, tmp_path) -> Iterator[DiscoveryStack]:
    tag = f"disc{secrets.token_hex(3)}"
    stack = Stack.create(log_dir=tmp_path / "logs", DATABASE_URL=e2e_database_url, REDIS_URL=e2e.redis_url,
                         WORKER_RESPONSE_TOPIC=f"{tag}_response", WORKER_TTL=WORKER_TTL,
                         REQUEST_TIMEOUT=REQUEST_TIMEOUT, LOG_LEVEL="INFO")
    stack.env.pop("WORKER_PROCESS_TOPICS", None)
    try:
        procs = stack.start_registered_workers(2, name_prefix=f"worker-{tag}")
        workers = {stack.worker_topic(name): proc for (name, proc) in stack.processes if proc in procs}
        _, port = stack.start_gateway(processes=1, name=f"gateway-{tag}")
        yield DiscoveryStack(stack, Keys(f"{tag}_response"), workers, f"http://127.0.0.1:{port}/ws")
    finally:
        stack.stop()


async def post_all(client, room: str, uuids: list[str], timeouts: list[str]) -> list[dict[str, Any]]:
    """new_message for each uuid, all sent at once; each answered `timeout` is sent again with the
    same uuid, as a client does (noted in `timeouts`). The final replies, in the order of `uuids`."""
    final: dict[str, dict[str, Any]] = {}
    waiting = list(uuids)
    while waiting:
        for uuid in waiting:
            await client.send({"uuid": uuid, "action": "new_message", "room": room, "text": f"text {uuid}"})
        for uuid in list(waiting):
            reply = await client.expect(lambda f, u=uuid: f.get("uuid") == u and f.get("action") == "new_message",
                                        ANSWER_WAIT)
            if reply.get("error_code") == "timeout":
                timeouts.append(uuid)
            else:
                final[uuid] = reply
                waiting.remove(uuid)
    return [final[uuid] for uuid in uuids]


def test_workers_without_topics_are_found_and_one_stopped_cleanly_leaves_at_once(e2e, discovery_stack):
    ds = discovery_stack
    data = e2e.fixtures(users=2, rooms=1, room_size=2)
    room = data["rooms"][0]["id"]
    topics = set(ds.workers)
    assert len(topics) == 2 and all(topic.startswith("chat.worker.") for topic in topics)
    assert ds.registry() == (topics, topics)
    assert "WORKER_PROCESS_TOPICS" not in ds.stack.env

    async def burst(client, prefix: str) -> list[dict[str, Any]]:
        timeouts: list[str] = []
        replies = await post_all(client, room, [f"{prefix}-{n}" for n in range(REQUESTS)], timeouts)
        assert timeouts == []
        return replies

    async def scenario(session):
        client = await connect(session, ds.url, data["users"][0])
        replies = await burst(client, f"both-{secrets.token_hex(3)}")
        assert all(reply["status"] == "success" for reply in replies), replies
        # Both workers had their share.
        assert all(ds.handled_by(topic) > 0 for topic in topics)

        stopped, kept = sorted(topics)
        assert ds.stack.stop_process(ds.workers[stopped], signal.SIGTERM) == 0
        # Withdrawn by the worker itself on its way out: gone before any heartbeat could expire.
        assert ds.registry() == ({kept}, {kept})
        before = ds.handled_by(kept)
        replies = await burst(client, f"one-{secrets.token_hex(3)}")
        assert all(reply["status"] == "success" for reply in replies), replies
        assert ds.handled_by(kept) - before >= REQUESTS
        await client.close()

    run(scenario)
    gateway = f"gateway-{ds.keys.namespace.removesuffix('_response')}"
    # The gateway says so at its next read of the registry.
    wait_for(lambda: "live workers: 1" in ds.stack.log(gateway), "the gateway's log of the change", LEAVES_WITHIN)
    assert "live workers: 2" in ds.stack.log(gateway)


def test_a_worker_that_stops_answering_leaves_the_choice_when_its_heartbeat_expires(e2e, discovery_stack):
    ds = discovery_stack
    data = e2e.fixtures(users=2, rooms=1, room_size=2)
    room = data["rooms"][0]["id"]
    frozen, kept = sorted(ds.workers)
    run_id = secrets.token_hex(3)

    async def scenario(session):
        client = await connect(session, ds.url, data["users"][0])
        await client.ok("list_rooms")
        # Frozen: its subscription stays in Redis, so publishes to it count as received, but it
        # answers nothing and refreshes no heartbeat (a lost host, a stalled process).
        os.kill(ds.workers[frozen].pid, signal.SIGSTOP)
        pruned = asyncio.create_task(asyncio.to_thread(
            wait_for, lambda: frozen not in ds.registry()[0], "the frozen worker pruned", LEAVES_WITHIN))
        timeouts: list[str] = []
        replies = await post_all(client, room, [f"frozen-{run_id}-{n}" for n in range(REQUESTS)], timeouts)
        assert all(reply["status"] == "success" for reply in replies), replies
        assert timeouts, "some requests went to the frozen worker and were answered timeout"

        await pruned
        # Out of the choice though still subscribed: nothing more is published to it, so a burst
        # is answered first time, without a timeout.
        later: list[str] = []
        replies = await post_all(client, room, [f"after-{run_id}-{n}" for n in range(REQUESTS)], later)
        assert all(reply["status"] == "success" for reply in replies) and later == [], later
        await client.close()

    run(scenario)
    os.kill(ds.workers[frozen].pid, signal.SIGKILL)
    ds.workers[frozen].wait()
    assert ds.registry() == ({kept}, {kept})
    # Every message was stored once, retries included.
    texts = [f"text frozen-{run_id}-{n}" for n in range(REQUESTS)]
    assert e2e.orm(lambda: ChatMessage.objects.filter(text__in=texts).count()) == REQUESTS


def test_a_killed_worker_leaves_the_registry_and_requests_keep_being_answered(e2e, discovery_stack):
    ds = discovery_stack
    data = e2e.fixtures(users=2, rooms=1, room_size=2)
    room = data["rooms"][0]["id"]
    killed, kept = sorted(ds.workers)
    run_id = secrets.token_hex(3)
    os.kill(ds.workers[killed].pid, signal.SIGKILL)
    ds.workers[killed].wait()

    async def scenario(session):
        client = await connect(session, ds.url, data["users"][0])
        # Its subscription went with the process: a publish to it reaches no one, and the gateway
        # tries the other at once; a request it had in hand would be a timeout, retried.
        timeouts: list[str] = []
        replies = await post_all(client, room, [f"killed-{run_id}-{n}" for n in range(REQUESTS)], timeouts)
        assert all(reply["status"] == "success" for reply in replies), replies
        await client.close()

    run(scenario)
    # Its entry stays until the heartbeat expires, then a gateway's read removes it.
    wait_for(lambda: ds.registry() == ({kept}, {kept}), "the killed worker pruned", LEAVES_WITHIN)
