"""The benchmark's Django Channels comparison (bench/channels_chat.py), served by uvicorn on the
end-to-end stack's database and Redis: it must be the same chat as the gateway's for what the
benchmark sends (the same frames, every member reached once, each message stored once, the same
refusals), or `python -m bench --targets channels` would compare two different things."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.e2e.comparison import check_message_as_the_gateways, check_refusals_as_the_workers
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module", params=["core", "pubsub"])
def channels_url(e2e, request):
    """The comparison on each of channels_redis's layers (`--channels-layer`)."""
    if request.param == "core" and e2e.redis_cluster:
        pytest.skip("on a Redis Cluster: channels_redis's core layer runs multi-key commands over keys of many "
                    "slots, so it takes one Redis (the benchmark's comparison runs on one)")
    proc, port = e2e.stack.start_channels(processes=1, name=f"channels-e2e-{request.param}", layer=request.param)
    try:
        yield f"http://127.0.0.1:{port}/ws"
    finally:
        e2e.stack.stop_process(proc)


def test_a_message_reaches_each_member_once_as_the_gateway_sends_it(e2e, channels_url):
    room, *members, outsider = e2e.room_of_two()

    async def scenario(session):
        sender, other, stranger = [await connect(session, channels_url, user) for user in (*members, outsider)]
        frame_uuid = uuid.uuid4().hex
        reply = await sender.ok("new_message", uuid=frame_uuid, room=room["id"], text="over channels")
        heard = await other.expect(lambda f: f.get("uuid") == frame_uuid)
        # The same chat through the gateway, for the frames' shape.
        via_gateway = await connect(session, e2e.gateway_a, members[0])
        gateway_reply = await via_gateway.ok("new_message", room=room["id"], text="over the gateway")
        # Nothing more for anyone: the stranger's next frame is the reply to its own request.
        pong = await stranger.request("list_rooms")
        await asyncio.sleep(0.2)
        await sender.drain()
        await other.drain()
        return reply, heard, gateway_reply, pong, sender.backlog, other.backlog

    reply, heard, gateway_reply, pong, sender_rest, other_rest = run(scenario)
    assert reply == heard
    assert pong["action"] == "list_rooms"
    assert sender_rest == [] and other_rest == []
    check_message_as_the_gateways(e2e, reply, gateway_reply, "over channels", room, members[0])


def test_refusals_are_the_workers_and_store_nothing(e2e, channels_url):
    room, _, _, outsider = e2e.room_of_two()

    async def scenario(session):
        anonymous = await connect(session, channels_url)
        unauthenticated = await anonymous.request("new_message", room=room["id"], text="refused")
        bad_token = await anonymous.request("authenticate", token="not-a-token")
        stranger = await connect(session, channels_url, outsider)
        not_member = await stranger.request("new_message", room=room["id"], text="refused")
        via_gateway = await connect(session, e2e.gateway_a, outsider)
        gateway_not_member = await via_gateway.request("new_message", room=room["id"], text="refused")
        return unauthenticated, bad_token, not_member, gateway_not_member

    unauthenticated, bad_token, not_member, gateway_not_member = run(scenario)
    check_refusals_as_the_workers(e2e, unauthenticated, bad_token, not_member, gateway_not_member)
