"""A publisher for tests (`settings.CHAT_EVENT_PUBLISHER`): records what chat.events publishes."""

from __future__ import annotations

from typing import Any

published: list[tuple[dict[str, Any], list[int]]] = []


def record(response: dict[str, Any], send_to: list[int]) -> None:
    published.append((response, list(send_to)))
