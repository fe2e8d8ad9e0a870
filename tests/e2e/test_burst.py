"""A client that sends a burst of frames in one write, end to end: one reply per frame, no eviction,
and the other members of its room keep getting their messages meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import connect, run
from tests.raw_websocket import RawWebSocket, text_frame

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Upper bound of one wait for a frame; a burst's replies all come well within it.
WAIT = 15.0
CHATTERS = 2
MESSAGES_PER_CHATTER = 15


class BurstClient(RawWebSocket):
    """A raw WebSocket client that writes a whole burst of frames in one write."""

    async def send_all(self, frames: list[dict[str, Any]]) -> None:
        self.writer.write(b"".join(text_frame(frame) for frame in frames))
        await self.writer.drain()

    async def request(self, frame: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
        """Send one frame; return its reply, keeping the other frames read meanwhile in `others`."""
        await self.send_all([frame])
        while True:
            received = await self.receive_text()
            if received.get("uuid") == frame["uuid"] and received.get("action") == frame["action"]:
                return received
            others.append(received)


@pytest.mark.parametrize("burst", [100, 500, 2000])
def test_a_burst_in_one_write_gets_one_reply_per_frame_while_the_room_chats(e2e, burst):
    data = e2e.fixtures(users=CHATTERS + 1, rooms=1, room_size=CHATTERS + 1)
    room_id = data["rooms"][0]["id"]
    burster_user, chatter_users = data["users"][0], data["users"][1:]
    run_id = secrets.token_hex(4)

    async def scenario(session):
        burster = await BurstClient.connect(urlsplit(e2e.gateway_a).hostname, urlsplit(e2e.gateway_a).port, WAIT)
        broadcasts: list[dict[str, Any]] = []
        auth = await burster.request({"uuid": f"auth-{run_id}", "action": "authenticate",
                                      "token": burster_user["token"]}, broadcasts)
        assert auth["status"] == "success", auth
        chatters = [await connect(session, url, user)
                    for url, user in zip(itertools.cycle([e2e.gateway_a, e2e.gateway_b]), chatter_users)]
        texts = {f"{run_id}-{user['username']}-{n}" for user in chatter_users for n in range(MESSAGES_PER_CHATTER)}

        async def chat(index: int) -> None:
            client, user = chatters[index], chatter_users[index]
            for n in range(MESSAGES_PER_CHATTER):
                await client.ok("new_message", room=room_id, text=f"{run_id}-{user['username']}-{n}")

        async def read_burst_replies(uuids: set[str]) -> dict[str, dict[str, Any]]:
            replies: dict[str, dict[str, Any]] = {}
            while len(replies) < len(uuids):
                frame = await burster.receive_text()
                if frame.get("action") == "select_room" and frame.get("uuid") in uuids:
                    assert frame["uuid"] not in replies, f"a second reply to {frame['uuid']}"
                    replies[frame["uuid"]] = frame
                else:
                    broadcasts.append(frame)
            return replies

        frames = [{"uuid": f"burst-{run_id}-{n}", "action": "select_room", "room": room_id} for n in range(burst)]
        uuids = {frame["uuid"] for frame in frames}
        reading = asyncio.create_task(read_burst_replies(uuids))
        await burster.send_all(frames)
        await asyncio.gather(*(chat(index) for index in range(CHATTERS)))
        replies = await reading

        # One reply per frame: a success, or rate_limited (over the bucket or the requests in flight).
        outcomes = [replies[frame["uuid"]].get("error_code", replies[frame["uuid"]]["status"]) for frame in frames]
        assert set(outcomes) <= {"success", "rate_limited"}, set(outcomes)
        assert "success" in outcomes and "rate_limited" in outcomes

        # Every chatter got every message of the room: its own were confirmed (`ok`), the others' came.
        for client, user in zip(chatters, chatter_users):
            for text in texts - {f"{run_id}-{user['username']}-{n}" for n in range(MESSAGES_PER_CHATTER)}:
                await client.expect(lambda f, text=text: f.get("action") == "new_message"
                                    and f.get("message", {}).get("text") == text, timeout=WAIT)
        # So did the burster, after its burst's replies, and its connection is open and usable again:
        # each request succeeds once its bucket has refilled (retried while it is still limited).
        async def once_not_limited(action: str, **fields: Any) -> dict[str, Any]:
            for attempt in itertools.count():
                reply = await burster.request({"uuid": f"{action}-{run_id}-{attempt}", "action": action, **fields},
                                              broadcasts)
                if reply["status"] == "success":
                    return reply
                assert reply["error_code"] == "rate_limited", reply
                assert attempt < 50, "still rate limited after 25 s"
                await asyncio.sleep(0.5)

        await once_not_limited("select_room", room=room_id)
        await once_not_limited("list_rooms")  # a barrier: every broadcast sent before it has come
        received = {frame["message"]["text"] for frame in broadcasts if frame.get("action") == "new_message"}
        assert texts <= received, texts - received
        burster.close()
        for client in chatters:
            await client.close()

    run(scenario)
