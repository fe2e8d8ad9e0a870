"""Shared set-up of the chat tests: what is published is recorded, never sent to a Redis."""

from __future__ import annotations

from typing import Any

import pytest

from chat import bus

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
