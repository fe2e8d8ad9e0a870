"""The benchmark's python-socketio comparison (bench/socketio_chat.py), served by gunicorn on the
end-to-end stack's database and Redis and spoken to by python-socketio's own client: it must be
the same chat as the gateway's for what the benchmark sends (the same frames, every member
reached once, across processes too, each message stored once, the same refusals), or `python -m
bench --targets socketio` would compare two different things."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import pytest
import socketio

from tests.e2e.comparison import check_message_as_the_gateways, check_refusals_as_the_workers
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WAIT = 10.0


@pytest.fixture(scope="module")
def socketio_urls(e2e):
    """Two servers of one process each on one Redis channel: what one's client sends, the other's
    clients get through python-socketio's Redis message queue, as between the benchmark's processes."""
    channel = f"socketio-e2e-{secrets.token_hex(3)}"
    started = [e2e.stack.start_socketio(processes=1, name=f"socketio-e2e-{n}", channel=channel) for n in (1, 2)]
    try:
        yield [f"http://127.0.0.1:{port}" for _, port in started]
    finally:
        for proc, _ in started:
            e2e.stack.stop_process(proc)


class SocketIOUser:
    """A python-socketio client whose `frame` events are queued as they come."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.client.on("frame", self.frames.put_nowait)

    @classmethod
    async def connect(cls, url: str, user: dict[str, Any] | None = None) -> SocketIOUser:
        self = cls()
        await self.client.connect(url, transports=["websocket"], wait_timeout=WAIT)
        if user is not None:
            reply = await self.request("authenticate", token=user["token"])
            assert reply["status"] == "success", reply
        return self

    async def request(self, action: str, **fields: Any) -> dict[str, Any]:
        """Send a frame; its reply (the next frame with its uuid: broadcasts of others are left queued)."""
        frame_uuid = fields.pop("uuid", None) or uuid.uuid4().hex
        await self.client.emit("frame", {"uuid": frame_uuid, "action": action, **fields})
        return await self.expect(frame_uuid)

    async def expect(self, frame_uuid: str) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.frames.get(), WAIT)
            if frame.get("uuid") == frame_uuid:
                return frame

    async def rest(self) -> list[dict[str, Any]]:
        """What else came, after a moment for stragglers."""
        await asyncio.sleep(0.3)
        frames = []
        while not self.frames.empty():
            frames.append(self.frames.get_nowait())
        return frames


def test_a_message_reaches_each_member_once_across_processes_as_the_gateway_sends_it(e2e, socketio_urls):
    data = e2e.fixtures(users=4, rooms=1, room_size=3)
    room = data["rooms"][0]
    members = [user for user in data["users"] if user["id"] in room["members"]]
    outsider = next(user for user in data["users"] if user["id"] not in room["members"])
    here, there = socketio_urls

    async def scenario(session):
        sender = await SocketIOUser.connect(here, members[0])
        near = await SocketIOUser.connect(here, members[1])
        far = await SocketIOUser.connect(there, members[2])
        stranger = await SocketIOUser.connect(there, outsider)
        try:
            frame_uuid = uuid.uuid4().hex
            reply = await sender.request("new_message", uuid=frame_uuid, room=room["id"], text="over socketio")
            heard = [await near.expect(frame_uuid), await far.expect(frame_uuid)]
            via_gateway = await connect(session, e2e.gateway_a, members[0])
            gateway_reply = await via_gateway.ok("new_message", room=room["id"], text="over the gateway")
            # Nothing more for anyone: the stranger's next frame is the reply to its own request.
            other = await stranger.request("list_rooms")
            rest = [await user.rest() for user in (sender, near, far, stranger)]
            return reply, heard, gateway_reply, other, rest
        finally:
            for user in (sender, near, far, stranger):
                await user.client.disconnect()

    reply, heard, gateway_reply, other, rest = run(scenario)
    assert heard == [reply, reply]
    assert other["action"] == "list_rooms" and other["status"] == "success"
    assert rest == [[], [], [], []]
    check_message_as_the_gateways(e2e, reply, gateway_reply, "over socketio", room, members[0])


def test_refusals_are_the_workers_and_store_nothing(e2e, socketio_urls):
    data = e2e.fixtures(users=3, rooms=1, room_size=2)
    room = data["rooms"][0]
    outsider = next(user for user in data["users"] if user["id"] not in room["members"])

    async def scenario(session):
        anonymous = await SocketIOUser.connect(socketio_urls[0])
        stranger = await SocketIOUser.connect(socketio_urls[1], outsider)
        try:
            unauthenticated = await anonymous.request("new_message", room=room["id"], text="refused")
            bad_token = await anonymous.request("authenticate", token="not-a-token")
            not_member = await stranger.request("new_message", room=room["id"], text="refused")
        finally:
            await anonymous.client.disconnect()
            await stranger.client.disconnect()
        via_gateway = await connect(session, e2e.gateway_a, outsider)
        gateway_not_member = await via_gateway.request("new_message", room=room["id"], text="refused")
        return unauthenticated, bad_token, not_member, gateway_not_member

    unauthenticated, bad_token, not_member, gateway_not_member = run(scenario)
    check_refusals_as_the_workers(e2e, unauthenticated, bad_token, not_member, gateway_not_member)
