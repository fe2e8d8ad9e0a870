"""`chat.client.ChatClient`, the asyncio client for bots and scripts, against the real processes:
two users through the gateway, a broadcast, a retry by uuid, `sync`, a refusal. (A lost connection
and the retries: tests/chat/test_client.py, against a scripted gateway.)"""

from __future__ import annotations

import asyncio

import pytest

from chat.client import ChatClient, ChatError

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://")


def test_two_bots_chat_through_the_gateway(e2e):
    data = e2e.fixtures(users=2)
    alice, bob = data["users"]

    async def scenario():
        async with ChatClient(ws_url(e2e.gateway_a), token=alice["token"]) as a, \
                ChatClient(ws_url(e2e.gateway_b), token=bob["token"]) as b:
            assert a.user == {"username": alice["username"]}
            assert a.may_retry("new_message") and not a.may_retry("create_room")
            room = (await a.request("create_room", name="bots", members=[bob["username"]]))["room"]
            await b.next_frame(lambda f: f.get("action") == "create_room")
            sent = (await a.request("new_message", room=room["id"], text="beep"))["message"]
            heard = await b.next_frame(lambda f: f.get("action") == "new_message")
            assert heard["message"] == sent
            # A retry with the same uuid is answered with the stored message, stored once.
            again = await a.request("new_message", room=room["id"], text="beep", uuid="bot-1")
            assert (await a.request("new_message", room=room["id"], text="beep", uuid="bot-1"))["message"] \
                == again["message"]
            assert [m["id"] for m in await b.sync(0)] == [sent["id"], again["message"]["id"]]
            with pytest.raises(ChatError) as refused:
                await a.request("select_room", room="0" * 32)
            assert refused.value.code == "invalid_room_id"
            assert (await a.request("list_rooms"))["rooms"][0]["id"] == room["id"]

    asyncio.run(asyncio.wait_for(scenario(), 60))
