"""chat.publish end to end: an event published from this (Django) process reaches the WebSocket
connections of the users it names, on every gateway, and no one else's."""

from __future__ import annotations

import asyncio

import pytest

from chat import bus, publish
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def on_the_stacks_bus(e2e, settings, monkeypatch) -> None:
    """chat.bus publishing to the e2e stack's Redis and response topic, with a client of its own."""
    settings.CHAT = {**settings.CHAT, "REDIS_URL": e2e.redis_url, "WORKER_RESPONSE_TOPIC": f"{e2e.tag}_response"}
    monkeypatch.setattr(bus, "_client", None)
    yield
    if bus._client is not None:
        bus._client.close()


def test_to_users_and_to_room_reach_the_named_users_connections_only(e2e, on_the_stacks_bus):
    room, alice, bob, outsider = e2e.room_of_two()

    def event(name: str):
        return lambda frame: frame.get("action") == "event" and frame.get("event") == name

    async def scenario(session):
        alice_a = await connect(session, e2e.gateway_a, alice)
        bob_a = await connect(session, e2e.gateway_a, bob)
        bob_b = await connect(session, e2e.gateway_b, bob)
        stranger = await connect(session, e2e.gateway_b, outsider)

        # Blocking calls (Redis, the database): off the event loop, as a task or a view would run them.
        await asyncio.to_thread(publish.to_users, [bob["id"]], "invoice.paid", {"invoice": 42, "text": "é"})
        expected = {"action": "event", "event": "invoice.paid", "data": {"invoice": 42, "text": "é"}}
        for client in (bob_a, bob_b):  # every connection of bob's, on both gateways
            assert await client.expect(event("invoice.paid")) == expected
        for client in (alice_a, stranger):
            await client.barrier()
            assert client.unread(event("invoice.paid")) == []

        await asyncio.to_thread(e2e.orm, lambda: publish.to_room(room["id"], "poll:closed", {"poll": 7}))
        expected = {"action": "event", "event": "poll:closed", "data": {"poll": 7}}
        for client in (alice_a, bob_a, bob_b):
            assert await client.expect(event("poll:closed")) == expected
        await stranger.barrier()
        assert stranger.unread(event("poll:closed")) == []

    run(scenario)
