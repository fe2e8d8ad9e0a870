"""Fixtures of the gateway's tests: one in-process fake Redis for every client the gateway creates."""

from __future__ import annotations

import fakeredis
import pytest
import redis.asyncio as aioredis

from websockets_gateway import bus as bus_module
from websockets_gateway.keys import Keys

from .fakes import CATALOGUE, fake_blocking_pool, make_settings


@pytest.fixture
def redis_server(monkeypatch):
    """The fakeredis server behind every `Redis.from_url` client and the publisher's blocking
    pool (`bus.publisher_client`), so the app and fake workers share it. It holds the action
    catalogue, as after a worker's start."""
    server = fakeredis.FakeServer()
    fakeredis.FakeRedis(server=server).set(Keys(make_settings().response_topic).catalogue, CATALOGUE)

    def from_url(url, **kwargs):
        return fakeredis.FakeAsyncRedis(server=server)

    def pool_from_url(url, max_connections, timeout, **kwargs):
        return fake_blocking_pool(server, max_connections, timeout)

    monkeypatch.setattr(aioredis.Redis, "from_url", from_url)
    monkeypatch.setattr(aioredis.BlockingConnectionPool, "from_url", pool_from_url)
    return server


@pytest.fixture
def publisher_pools(redis_server, monkeypatch):
    """The connection pools the gateway's publishers make (`bus.publisher_client`), on the fake
    Redis of `redis_server`, in the order they are made: one per app started."""
    pools = []

    def pool_from_url(url, max_connections, timeout, **kwargs):
        pool = fake_blocking_pool(redis_server, max_connections, timeout)
        pools.append(pool)
        return pool

    monkeypatch.setattr(aioredis.BlockingConnectionPool, "from_url", pool_from_url)
    return pools
