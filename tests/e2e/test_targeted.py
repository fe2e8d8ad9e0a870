"""Targeted delivery, end to end: a reply for several users reaches only the gateway processes that
hold one of them, and a user who connects while a message is on its way misses nothing (the reply
to `authenticate` comes once its presence is written; the `sync` after it covers the rest)."""

from __future__ import annotations

import asyncio
import random
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ENVELOPES = "chat_gateway_bus_envelopes_total"
# The connect-window run: recipients that connect, sync and leave again and again, while the
# sender posts to their room.
RECIPIENTS = 4
SESSIONS = 25
# The sender posts over this many connections in turn, to stay under each one's rate limit.
SENDER_CONNECTIONS = 3
# The least time between two of the sender's messages: each of its connections then sends at most
# 20 frames a second, under the gateway's rate limit (30 a second), however fast the replies come.
POST_INTERVAL = 1 / (20 * SENDER_CONNECTIONS)
# A recipient stays connected, and then away, a random time up to this (seconds).
MAX_STAY = 0.02
# How long a last session waits for a message still on its way.
FINAL_WAIT = 10.0


def envelopes_received(gateway_url: str) -> float:
    """Gateway B's envelopes counter (one process: every scrape reaches it)."""
    with urllib.request.urlopen(gateway_url.replace("/ws", "/metrics"), timeout=5) as response:
        text = response.read().decode()
    [value] = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == ENVELOPES]
    return value


def test_a_direct_message_between_two_users_on_one_gateway_never_reaches_another(e2e):
    alice, bob, carol = e2e.fixtures(users=3)["users"]

    async def scenario(session):
        alice_a = await connect(session, e2e.gateway_a, alice)
        bob_a = await connect(session, e2e.gateway_a, bob)
        carol_b = await connect(session, e2e.gateway_b, carol)
        before = envelopes_received(e2e.gateway_b)

        sent = await alice_a.ok("direct_message", to=bob["username"], text="between us", uuid="dm-a")
        assert (await bob_a.expect(lambda f: f.get("uuid") == "dm-a"))["message"] == sent["message"]
        # B reads its topic in order: a reply to B's own client, published after bob had the
        # message, comes after anything of that message that was published to B.
        await carol_b.ok("list_rooms")
        assert envelopes_received(e2e.gateway_b) - before == 1  # the list_rooms reply alone

        # The counter does move for a message B has a recipient of.
        to_carol = await alice_a.ok("direct_message", to=carol["username"], text="to B", uuid="dm-b")
        assert (await carol_b.expect(lambda f: f.get("uuid") == "dm-b"))["message"] == to_carol["message"]
        assert envelopes_received(e2e.gateway_b) - before == 2
        assert carol_b.unread(lambda f: f.get("uuid") == "dm-a") == []

    run(scenario)


def test_a_user_who_connects_while_messages_are_on_their_way_misses_none(e2e):
    """Recipients connect, authenticate, `sync` from the newest message they have seen, stay a
    moment and leave, over and over, on both gateways, while the sender posts to their room.

    Within each session nothing may be missing between the `sync`'s `after` and the newest
    message the session saw (a message committed after the sync read the database, routed
    before the recipient's presence was written, would be such a gap); and over all sessions
    every message is seen.
    """
    data = e2e.fixtures(users=RECIPIENTS + 1, rooms=1, room_size=RECIPIENTS + 1)
    room = data["rooms"][0]
    by_id = {user["id"]: user for user in data["users"]}
    sender, *recipients = (by_id[pk] for pk in room["members"])
    room_id = room["id"]
    gateways = [e2e.gateway_a, e2e.gateway_b]
    rng = random.Random(7)

    async def scenario(session):
        # The sender's connections, taken in turn: one alone would reach its rate limit.
        posting = [await connect(session, e2e.gateway_a, sender) for number in range(SENDER_CONNECTIONS)]
        sent: list[int] = []
        done = asyncio.Event()

        async def post() -> None:
            """One message at a time: each stored before the next is sent, so ids are in commit order."""
            number = 0
            while not done.is_set():
                reply = await posting[number % SENDER_CONNECTIONS].ok("new_message", room=room_id, text=f"m{number}")
                sent.append(reply["message"]["id"])
                number += 1
                await asyncio.sleep(POST_INTERVAL)

        async def visit(user: dict[str, Any], gateway: str, seen: set[int], stay: float | None) -> set[int]:
            """One session: authenticate, sync from the newest seen, stay `stay` seconds (None: until
            every message sent is seen), leave; what it saw, checked for a gap."""
            client = await connect(session, gateway, user)
            after = max(seen, default=None)
            synced = await client.ok("sync", **({} if after is None else {"after": after}), limit=500)
            assert synced["has_more"] is False
            mine = {message["id"] for message in synced["messages"] if message["room"] == room_id}
            if stay is None:
                while not set(sent) <= seen | mine:
                    frame = await client.expect(lambda f: f.get("action") == "new_message", FINAL_WAIT)
                    mine.add(frame["message"]["id"])
            else:
                await asyncio.sleep(stay)
                await client.drain()
            mine |= {frame["message"]["id"] for frame in client.unread(
                lambda f: f.get("action") == "new_message" and f.get("room") == room_id)}
            await client.close()
            # Every message stored between `after` and the newest this session saw: the sender
            # posts one at a time, so each of them was acknowledged before that newest was sent.
            expected = {pk for pk in sent if (after is None or pk > after) and pk <= max(mine, default=0)}
            assert expected <= mine, f"{user['username']} missed {sorted(expected - mine)} after {after}"
            return mine

        async def come_and_go(user: dict[str, Any], index: int) -> set[int]:
            seen: set[int] = set()
            for number in range(SESSIONS):
                # Away a random moment (the workload's shape, not a wait for anything): sessions
                # begin at any point of a message's way.
                await asyncio.sleep(rng.uniform(0, MAX_STAY))
                seen |= await visit(user, gateways[(index + number) % 2], seen, rng.uniform(0, MAX_STAY))
            return seen

        poster = asyncio.create_task(post())
        try:
            seen_by = await asyncio.gather(*(come_and_go(user, index) for index, user in enumerate(recipients)))
        finally:
            done.set()
            await poster
        # A last session each, the sender done: every message was seen, live or in a sync.
        for index, (user, seen) in enumerate(zip(recipients, seen_by)):
            seen |= await visit(user, gateways[index % 2], seen, None)
            assert set(sent) <= seen

    run(scenario)
