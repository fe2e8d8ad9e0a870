"""Fixtures of the gateway's tests: one in-process fake Redis for every client the gateway creates."""

from __future__ import annotations

import fakeredis
import pytest

from websockets_gateway import bus as bus_module


@pytest.fixture
def redis_server(monkeypatch):
    """The fakeredis server behind every `Redis.from_url` client, so the app and fake workers share it."""
    server = fakeredis.FakeServer()

    def from_url(url, **kwargs):
        return fakeredis.FakeAsyncRedis(server=server)

    monkeypatch.setattr(bus_module.aioredis.Redis, "from_url", from_url)
    return server
