"""The benchmark's Django Channels comparison (scripts/channels_chat.py), served by uvicorn on the
end-to-end stack's database and Redis: it must be the same chat as the gateway's for what the
benchmark sends (the same frames, every member reached once, each message stored once, the same
refusals), or `python -m scripts.bench --targets channels` would compare two different things."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chat.models import ChatMessage
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module", params=["core", "pubsub"])
def channels_url(e2e, request):
    """The comparison on each of channels_redis's layers (`--channels-layer`)."""
    proc, port = e2e.stack.start_channels(processes=1, name=f"channels-e2e-{request.param}", layer=request.param)
    try:
        yield f"http://127.0.0.1:{port}/ws"
    finally:
        e2e.stack.stop_process(proc)


def _shape(frame):
    """A frame's keys, nested one level, without its values (ids, times and uuids differ)."""
    return {key: sorted(value) if isinstance(value, dict) else type(value).__name__ for key, value in frame.items()}


def test_a_message_reaches_each_member_once_as_the_gateway_sends_it(e2e, channels_url):
    data = e2e.fixtures(users=3, rooms=1, room_size=2)
    room = data["rooms"][0]
    members = [user for user in data["users"] if user["id"] in room["members"]]
    outsider = next(user for user in data["users"] if user["id"] not in room["members"])

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
    assert reply["message"]["text"] == "over channels" and reply["message"]["room"] == room["id"]
    assert reply["message"]["user"] == {"username": members[0]["username"]}
    assert _shape(reply) == _shape(gateway_reply)
    assert pong["action"] == "list_rooms"
    assert sender_rest == [] and other_rest == []
    stored = e2e.orm(lambda: list(ChatMessage.objects.filter(text="over channels").values_list("id", flat=True)))
    assert stored == [reply["message"]["id"]]


def test_refusals_are_the_workers_and_store_nothing(e2e, channels_url):
    data = e2e.fixtures(users=3, rooms=1, room_size=2)
    room = data["rooms"][0]
    outsider = next(user for user in data["users"] if user["id"] not in room["members"])

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
    assert unauthenticated["error_code"] == "authentication_required"
    assert bad_token["error_code"] == "invalid_token"
    assert not_member["status"] == "error" and not_member["error_code"] == gateway_not_member["error_code"]
    assert not e2e.orm(lambda: ChatMessage.objects.filter(text="refused").exists())
