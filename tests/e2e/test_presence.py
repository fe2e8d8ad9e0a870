"""What is not stored, end to end: typing notices and who_is_online (presence across gateways)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal

import pytest

from chat.models import ChatMessage
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Presence is written to Redis just after authentication, and removed just after a close:
# who_is_online is polled (a few times a second, well under the rate limit) up to these bounds.
PRESENCE_WAIT = 5.0
# A gateway killed without a clean shutdown is forgotten after its PRESENCE_TTL (2 s here).
KILLED_GATEWAY_WAIT = 10.0
POLL_INTERVAL = 0.1
# How many polls confirm that a user stays online after some of their connections closed.
STAYS_ONLINE_POLLS = 5


async def online_until(client, room_id, done, timeout=PRESENCE_WAIT):
    """Poll who_is_online until `done(online)`; return that reply."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reply = await client.ok("who_is_online", room=room_id)
        if done(reply["online"]):
            return reply
        if loop.time() > deadline:
            raise AssertionError(f"who_is_online still {reply['online']} after {timeout}s")
        await asyncio.sleep(POLL_INTERVAL)


def names(*users):
    return sorted(user["username"] for user in users)


def test_typing_reaches_the_other_members_only(e2e):
    data = e2e.fixtures(users=4, rooms=1, room_size=3)
    room = data["rooms"][0]
    by_id = {u["id"]: u for u in data["users"]}
    typist, member_1, member_2 = (by_id[pk] for pk in room["members"])
    outsider = next(u for u in data["users"] if u["id"] not in room["members"])
    stored_before = e2e.orm(lambda: ChatMessage.objects.count())

    async def scenario(session):
        typist_a = await connect(session, e2e.gateway_a, typist)
        typist_b = await connect(session, e2e.gateway_b, typist)
        first = await connect(session, e2e.gateway_a, member_1)
        second_b = await connect(session, e2e.gateway_b, member_2)
        second_a = await connect(session, e2e.gateway_a, member_2)
        stranger = await connect(session, e2e.gateway_b, outsider)

        await typist_a.send({"uuid": "typing-1", "action": "typing", "room": room["id"]})
        expected = {"uuid": "typing-1", "action": "typing", "room": room["id"], "status": "success",
                    "user": {"username": typist["username"]}}

        def typed(frame_uuid):
            return lambda f: f.get("uuid") == frame_uuid and f.get("action") == "typing"

        for client in (first, second_b, second_a):
            assert await client.expect(typed("typing-1")) == expected

        # The barrier for the typist's own connections: another member's typing notice, published
        # after the first, reaches them over the same subscription, so it comes after any copy of it.
        await first.send({"uuid": "typing-2", "action": "typing", "room": room["id"]})
        for client in (typist_a, typist_b, second_a):
            got = await client.expect(typed("typing-2"))
            assert got["user"] == {"username": member_1["username"]}
        for client in (typist_a, typist_b):
            assert (await client.request("ping"))["status"] == "success"
            await client.barrier()
            assert client.unread(lambda f: f.get("uuid") == "typing-1") == [], client.backlog
            assert client.unread(lambda f: f.get("action") not in ("typing", "list_rooms", "ping")) == []
        await first.barrier()
        assert first.unread(typed("typing-2")) == []
        await stranger.barrier()
        assert stranger.unread(lambda f: f.get("action") == "typing") == []

        # A non-member gets an error, and the members nothing.
        refused = await stranger.request("typing", room=room["id"], uuid="typing-3")
        assert refused["status"] == "error" and refused["error_code"] == "invalid_room_id", refused
        assert refused["room"] == room["id"]
        await typist_a.send({"uuid": "typing-4", "action": "typing", "room": room["id"]})
        for client in (first, second_b):
            await client.expect(typed("typing-4"))
            assert client.unread(typed("typing-3")) == []

    run(scenario)
    assert e2e.orm(lambda: ChatMessage.objects.count()) == stored_before


def test_who_is_online_counts_a_user_once_until_their_last_connection_closes(e2e):
    data = e2e.fixtures(users=4, rooms=1, room_size=3)
    room = data["rooms"][0]
    by_id = {u["id"]: u for u in data["users"]}
    busy, watcher, offline = (by_id[pk] for pk in room["members"])
    outsider = next(u for u in data["users"] if u["id"] not in room["members"])

    async def scenario(session):
        observer = await connect(session, e2e.gateway_b, watcher)
        # Every client is kept referenced: a dropped aiohttp WebSocket is closed when collected.
        # Connected but not authenticated: counts for no one.
        anonymous = await connect(session, e2e.gateway_a)
        # Online, but not a member of the room.
        elsewhere = await connect(session, e2e.gateway_a, outsider)
        reply = await online_until(observer, room["id"], lambda online: online == names(watcher))
        assert reply == {"uuid": reply["uuid"], "action": "who_is_online", "room": room["id"], "status": "success",
                         "online": names(watcher)}

        tabs = [await connect(session, e2e.gateway_a, busy), await connect(session, e2e.gateway_a, busy),
                await connect(session, e2e.gateway_b, busy)]
        reply = await online_until(observer, room["id"], lambda online: online == names(busy, watcher))
        assert reply["online"] == names(busy, watcher)  # once, for three connections
        assert offline["username"] not in reply["online"]
        # Any member may ask, from any gateway.
        assert (await tabs[0].ok("who_is_online", room=room["id"]))["online"] == names(busy, watcher)

        # Two of the three close: still online.
        ping_before = (await observer.ok("ping"))["connections"]
        await tabs[2].close()  # on gateway B, where the observer is
        await tabs[1].close()
        # Gateway B has seen its close once its connection count drops.
        await wait_for_connections(observer, ping_before - 1)
        for _ in range(STAYS_ONLINE_POLLS):
            assert (await observer.ok("who_is_online", room=room["id"]))["online"] == names(busy, watcher)
            await asyncio.sleep(POLL_INTERVAL)

        # The last one closes: offline.
        await tabs[0].close()
        await online_until(observer, room["id"], lambda online: online == names(watcher))

        # And back online on authenticating again.
        back = await connect(session, e2e.gateway_b, busy)
        await online_until(observer, room["id"], lambda online: online == names(busy, watcher))

        stranger = await connect(session, e2e.gateway_b, outsider)
        refused = await stranger.request("who_is_online", room=room["id"])
        assert refused["status"] == "error" and refused["error_code"] == "invalid_room_id", refused
        assert not anonymous.ws.closed and not elsewhere.ws.closed and not back.ws.closed

    run(scenario)


async def wait_for_connections(client, count, timeout=PRESENCE_WAIT):
    """Poll ping until this client's gateway process reports at most `count` open connections."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        connections = (await client.ok("ping"))["connections"]
        if connections <= count:
            return
        if loop.time() > deadline:
            raise AssertionError(f"gateway still has {connections} connections, not {count}")
        await asyncio.sleep(POLL_INTERVAL)


GATEWAY_NUMBERS = itertools.count(1)


@pytest.fixture()
def short_ttl_gateway(e2e):
    """A gateway of its own, with a short presence TTL, that the test may kill with SIGKILL."""
    started = []

    def start(ttl: str = "2"):
        proc, port = e2e.stack.start_gateway(processes=1, name=f"gateway-ttl-{next(GATEWAY_NUMBERS)}-{e2e.tag}",
                                             extra_env={"PRESENCE_TTL": ttl})
        started.append(proc)
        return proc, f"http://127.0.0.1:{port}/ws"

    yield start
    for proc in started:
        if proc.poll() is None:
            # The gunicorn master and its worker share a process group of their own (start_new_session).
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_users_of_a_killed_gateway_go_offline_after_its_ttl(e2e, short_ttl_gateway):
    data = e2e.fixtures(users=3, rooms=1, room_size=3)
    room = data["rooms"][0]
    by_id = {u["id"]: u for u in data["users"]}
    doomed, survivor, watcher = (by_id[pk] for pk in room["members"])
    proc, url = short_ttl_gateway()

    async def scenario(session):
        observer = await connect(session, e2e.gateway_b, watcher)
        # Kept referenced: a dropped aiohttp WebSocket is closed when collected.
        clients = [await connect(session, url, doomed), await connect(session, url, survivor),
                   await connect(session, e2e.gateway_a, survivor)]  # the survivor has a connection elsewhere too
        await online_until(observer, room["id"], lambda online: online == names(doomed, survivor, watcher))

        # kill -9 of the whole gateway (master and worker): no clean shutdown, no presence removal.
        os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        await online_until(observer, room["id"], lambda online: online == names(survivor, watcher),
                           timeout=KILLED_GATEWAY_WAIT)
        assert not clients[2].ws.closed

    run(scenario)
