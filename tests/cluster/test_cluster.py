"""The chat on a Redis Cluster of three masters, end to end: requests and replies by sharded pub/sub,
presence across gateways, and a master restarted while clients keep sending."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest

from chat.models import ChatMessage
from scripts.cluster import LocalCluster
from tests.e2e.client import Client, request_until_success
from tests.e2e.conftest import E2EStack, connect, run
from tests.e2e.test_presence import names, online_until
from websockets_gateway import redis_clients
from websockets_gateway.keys import Keys

from .conftest import PRESENCE_TTL, REQUEST_TIMEOUT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

logger = logging.getLogger(__name__)

# Gateway processes of the stack: two of gateway A, one of gateway B.
GATEWAY_PROCESSES = 3
# What a reply may take beyond REQUEST_TIMEOUT: scheduling and a local round trip.
REPLY_MARGIN = 1.0
# How long every subscription takes to be back after a master is (the subscribers' capped backoff,
# with its jitter, and a topology read).
RESUBSCRIBE_BOUND = 10.0
# The master restart under load: this many clients (members of one room, on both gateways) each
# send at least this many messages, one after the other, retrying a `timeout` with the same uuid,
# and go on until the master is back (a pause between messages, to bound how many), so that the
# restart certainly falls among them however fast the machine answers.
LOAD_CLIENTS = 6
LOAD_MESSAGES = 12
LOAD_PACE = 0.05
# How long the master stays down: longer than a request's timeout, so requests are lost with it.
DOWN_SECONDS = 4.0
# How long one client's messages may take, the restart included.
LOAD_BOUND = 60.0
POLL_INTERVAL = 0.1


def _shard_subscribers(cluster: LocalCluster, channel: str) -> dict[int, tuple[int, int]]:
    """For each master: (sharded subscribers of `channel`, classic subscribers of it)."""
    counts = {}
    for port in cluster.ports:
        with cluster.node(port) as node:
            sharded = dict(node.execute_command("PUBSUB SHARDNUMSUB", channel)).get(channel.encode(), 0)
            classic = dict(node.pubsub_numsub(channel)).get(channel.encode(), 0)
        counts[port] = (sharded, classic)
    return counts


def _reply_topics(cluster: LocalCluster) -> set[str]:
    found: set[str] = set()
    for port in cluster.ports:
        with cluster.node(port) as node:
            found.update(name.decode() for name in node.execute_command("PUBSUB SHARDCHANNELS", "gateway_reply:*"))
    return found


def _expected_subscribers(stack: E2EStack, cluster: LocalCluster) -> dict[str, int]:
    replies = {topic for topic in _reply_topics(cluster) if topic.startswith("gateway_reply:")}
    return {**{topic: 1 for topic in stack.worker_topics}, stack.stack.env["WORKER_RESPONSE_TOPIC"]: GATEWAY_PROCESSES,
            **{topic: 1 for topic in replies}}


async def _subscribers_until(stack: E2EStack, expected: dict[str, int], bound: float) -> float:
    """Poll the sharded subscriber counts until they are `expected`; return the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        try:
            with stack.redis_client() as client:
                counts = {channel: redis_clients.subscriber_count(client, channel) for channel in expected}
        except redis_clients.REDIS_ERRORS as exc:
            counts = {"error": str(exc)}
        if counts == expected:
            return loop.time() - started
        assert loop.time() - started < bound, f"subscribers {counts} after {bound}s, not {expected}"
        await asyncio.sleep(POLL_INTERVAL)


def _room_and_members(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    room = data["rooms"][0]
    by_id = {user["id"]: user for user in data["users"]}
    return room, [by_id[pk] for pk in room["members"]]


def test_requests_and_replies_go_by_sharded_pubsub_and_reach_members_on_both_gateways(cluster_stack,
                                                                                       local_cluster):
    data = cluster_stack.fixtures(users=3, rooms=1, room_size=3)
    room, (alice, bob, carol) = _room_and_members(data)
    text = f"over the cluster {uuid.uuid4().hex}"

    async def scenario(session):
        sender = await connect(session, cluster_stack.gateway_a, alice)
        bob_b = await connect(session, cluster_stack.gateway_b, bob)
        carol_a = await connect(session, cluster_stack.gateway_a, carol)
        carol_b = await connect(session, cluster_stack.gateway_b, carol)
        reply = await sender.ok("new_message", room=room["id"], text=text)
        assert reply["message"]["text"] == text
        for client in (bob_b, carol_a, carol_b):
            live = await client.expect(lambda f: f.get("action") == "new_message"
                                       and f.get("message", {}).get("id") == reply["message"]["id"])
            assert live["status"] == "success" and live["room"] == room["id"]
        selected = await bob_b.ok("select_room", room=room["id"])
        assert selected["room_messages"][-1]["text"] == text

    run(scenario)
    # Every topic is subscribed on the master of its slot, by SSUBSCRIBE, and on no node by SUBSCRIBE.
    for channel, subscribers in _expected_subscribers(cluster_stack, local_cluster).items():
        owner = local_cluster.owner_port(channel)
        counts = _shard_subscribers(local_cluster, channel)
        assert counts[owner] == (subscribers, 0), (channel, counts)
        assert all(counts[port] == (0, 0) for port in local_cluster.ports if port != owner), (channel, counts)
    assert cluster_stack.orm(lambda: ChatMessage.objects.filter(text=text).count()) == 1


def test_who_is_online_across_two_gateways_with_every_presence_key_on_one_master(cluster_stack, local_cluster):
    data = cluster_stack.fixtures(users=2, rooms=1, room_size=2)
    room, (alice, bob) = _room_and_members(data)
    keys = Keys(cluster_stack.stack.env["WORKER_RESPONSE_TOPIC"])

    async def scenario(session):
        watcher = await connect(session, cluster_stack.gateway_a, alice)
        await online_until(watcher, room["id"], lambda online: online == names(alice))
        bob_b = await connect(session, cluster_stack.gateway_b, bob)
        await online_until(watcher, room["id"], lambda online: online == names(alice, bob))
        # The presence keys share the deployment's hash tag: all on the master of its slot.
        owner = local_cluster.owner_port(keys.presence_user(bob["id"]))
        for port in local_cluster.ports:
            with local_cluster.node(port) as node:
                found = node.keys(f"chat:{{{keys.namespace}}}:presence:*")
            assert bool(found) is (port == owner), (port, found)
        await bob_b.close()
        await online_until(watcher, room["id"], lambda online: online == names(alice))

    run(scenario)


def test_a_master_restarted_under_load_loses_no_message_and_stores_none_twice(cluster_stack, local_cluster):
    """The master that serves the response topic (and, by the hash tag, every presence key) stops
    while LOAD_CLIENTS clients send messages, and starts again empty on its port. Each frame gets
    one reply; a `timeout` (a request or reply lost with the master: docs/protocol.md) is retried
    with the same uuid until it succeeds. Afterwards every message is stored exactly once, every
    subscription is back, presence is written again, and a message reaches the other members live."""
    data = cluster_stack.fixtures(users=LOAD_CLIENTS, rooms=1, room_size=LOAD_CLIENTS)
    room, members = _room_and_members(data)
    response_topic = cluster_stack.stack.env["WORKER_RESPONSE_TOPIC"]
    victim = local_cluster.owner_port(response_topic)
    run_id = uuid.uuid4().hex
    figures: dict[str, Any] = {}
    sent_by: dict[int, int] = {}  # how many messages each client sent

    async def scenario(session):
        loop = asyncio.get_running_loop()
        clients: list[Client] = [
            await connect(session, cluster_stack.gateway_a if index % 2 else cluster_stack.gateway_b, user)
            for index, user in enumerate(members)]
        expected = _expected_subscribers(cluster_stack, local_cluster)
        await _subscribers_until(cluster_stack, expected, RESUBSCRIBE_BOUND)
        await online_until(clients[0], room["id"], lambda online: online == names(*members))
        first_sent, restarted = asyncio.Event(), asyncio.Event()

        async def send_all(index: int, client: Client) -> list[int]:
            attempts = []
            while len(attempts) < LOAD_MESSAGES or not restarted.is_set():
                number = len(attempts)
                frame = {"uuid": f"load-{run_id}-{index}-{number}", "action": "new_message", "room": room["id"],
                         "text": f"{index}/{number}"}
                reply, tries = await request_until_success(client, frame, LOAD_BOUND, REQUEST_TIMEOUT + REPLY_MARGIN)
                assert reply["message"]["text"] == frame["text"]
                attempts.append(tries)
                sent_by[index] = len(attempts)
                first_sent.set()
                await asyncio.sleep(LOAD_PACE)  # the pace of the load, not a wait for anything
            return attempts

        async def restart_master() -> None:
            await first_sent.wait()
            started = loop.time()
            assert await asyncio.to_thread(local_cluster.stop_node, victim) == 0
            await asyncio.sleep(DOWN_SECONDS)
            await asyncio.to_thread(local_cluster.start_node, victim)
            figures["down"] = loop.time() - started
            restarted.set()

        restarting = asyncio.create_task(restart_master())
        attempts = await asyncio.gather(*(send_all(index, client) for index, client in enumerate(clients)))
        await restarting
        figures["retried"] = sum(tries - 1 for per_client in attempts for tries in per_client)
        figures["resubscribed"] = await _subscribers_until(cluster_stack, expected, RESUBSCRIBE_BOUND)
        # The master came back empty: every gateway registers its users again by itself.
        await online_until(clients[0], room["id"], lambda online: online == names(*members), PRESENCE_TTL * 2)
        after = await clients[0].ok("new_message", room=room["id"], text=f"after the restart {run_id}")
        await asyncio.gather(*(client.expect(lambda f: f.get("message", {}).get("id") == after["message"]["id"])
                               for client in clients[1:]))

    run(scenario)
    stored = cluster_stack.orm(lambda: list(ChatMessage.objects.filter(client_uuid__startswith=f"load-{run_id}-")
                                            .values_list("client_uuid", flat=True)))
    assert sorted(stored) == sorted(f"load-{run_id}-{index}-{number}"
                                    for index, count in sent_by.items() for number in range(count))
    # The restart did cost lost requests or replies (else it tested nothing), each retried.
    assert figures["retried"] > 0
    logger.info("master :%d restarted (down %.1fs) under %d clients, %d messages: %d retries after `timeout`, "
                "every subscription back %.2fs after the sends ended", victim, figures["down"], LOAD_CLIENTS,
                sum(sent_by.values()), figures["retried"], figures["resubscribed"])
