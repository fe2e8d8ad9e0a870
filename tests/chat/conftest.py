"""Shared set-up of the chat tests: live events are recorded, never sent to a Redis."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chat import publisher


@pytest.fixture(autouse=True)
def published(settings) -> list[tuple[dict[str, Any], list[int]]]:
    """What chat.events published in this test, as (response, send_to) pairs."""
    settings.CHAT_EVENT_PUBLISHER = "tests.chat.publisher.record"
    publisher.published.clear()
    yield publisher.published
    publisher.published.clear()
