"""Shared set-up of the chat tests: what is published is recorded, never sent to a Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from chat import bus
from websockets_gateway.keys import Keys, run_id
from websockets_gateway.keys import presence_id as spell_presence_id

# The real publisher, for the tests that put it back (on fakeredis).
REAL_PUBLISH = bus.publish


@pytest.fixture(autouse=True)
def published(monkeypatch) -> list[tuple[dict[str, Any], list[int]]]:
    """What went through chat.bus.publish in this test (chat.events, chat.publish), as
    (response, send_to) pairs."""
    recorded: list[tuple[dict[str, Any], list[int]]] = []

    def record(response: dict[str, Any], send_to: list[int]) -> None:
        recorded.append((response, list(send_to)))

    monkeypatch.setattr(bus, "publish", record)
    return recorded


def online_on(client: redis.Redis, keys: Keys, gateway_id: str, *user_pks: int) -> str:
    """Write to Redis what a live gateway process `gateway_id` writes while it holds these users
    (websockets_gateway/presence.py); return its reply topic, where replies for them go."""
    presence_id = spell_presence_id(run_id(gateway_id, "a1b2"), 0)
    client.set(keys.presence_gateway(presence_id), "host:1", px=60_000)
    for user_pk in user_pks:
        client.sadd(keys.presence_user(user_pk), presence_id)
    return keys.gateway_reply_topic(gateway_id)
