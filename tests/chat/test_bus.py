"""`chat.bus`: the publisher of replies for several users, on an in-process Redis."""

from __future__ import annotations

import json

import fakeredis
import pytest
import redis

from chat import bus as broadcast
from chat import routing
from chat.events import PublishError
from tests.chat.conftest import REAL_PUBLISH, online_on
from websockets_gateway.keys import Keys

REPLY = {"uuid": "u-1", "action": "new_message", "room": "ab" * 16, "status": "success",
         "message": {"id": 1, "text": "é, not \\u00e9"}}


@pytest.fixture(autouse=True)
def real_publish(monkeypatch) -> None:
    """The real chat.bus.publish, not the recorder of tests/chat/conftest.py."""
    monkeypatch.setattr(broadcast, "publish", REAL_PUBLISH)


@pytest.fixture
def server(monkeypatch) -> fakeredis.FakeServer:
    server = fakeredis.FakeServer()
    monkeypatch.setattr(broadcast, "_client", fakeredis.FakeRedis(server=server))
    return server


def subscribed(server: fakeredis.FakeServer, *topics: str):
    subscriber = fakeredis.FakeRedis(server=server).pubsub()
    subscriber.subscribe(*topics)
    for _ in topics:
        assert subscriber.get_message(timeout=1)["type"] == "subscribe"
    return subscriber


def received(subscriber) -> list[tuple[bytes, bytes]]:
    messages = []
    while (message := subscriber.get_message(timeout=0.2)) is not None:
        messages.append((message["channel"], message["data"]))
    return sorted(messages)


def test_publish_sends_a_worker_envelope_once_to_each_gateway_that_holds_a_recipient(server, settings):
    settings.CHAT = {**settings.CHAT, "WORKER_RESPONSE_TOPIC": "replies"}
    keys = Keys("replies")
    client = broadcast._client
    first = online_on(client, keys, "gw-1", 3)
    second = online_on(client, keys, "gw-2", 1, 3)
    idle = online_on(client, keys, "gw-idle", 99)
    subscriber = subscribed(server, "replies", first, second, idle)
    broadcast.publish(REPLY, [3, 1])
    expected = {"type": "success_response", "request_id": None, "send_to": [3, 1], "session_data": None,
                "response": REPLY}
    # Compact UTF-8 JSON, as the workers send it.
    data = json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    assert received(subscriber) == [(first.encode(), data), (second.encode(), data)]
    subscriber.close()


def test_no_gateway_hears_of_users_that_none_holds(server, settings):
    settings.CHAT = {**settings.CHAT, "WORKER_RESPONSE_TOPIC": "replies"}
    elsewhere = online_on(broadcast._client, Keys("replies"), "gw-1", 2)
    subscriber = subscribed(server, "replies", elsewhere)
    broadcast.publish(REPLY, [1])
    assert received(subscriber) == []
    subscriber.close()


def test_a_gateway_whose_heartbeat_is_gone_gets_nothing(server, settings):
    settings.CHAT = {**settings.CHAT, "WORKER_RESPONSE_TOPIC": "replies"}
    keys = Keys("replies")
    dead = online_on(broadcast._client, keys, "gw-dead", 1)
    broadcast._client.delete(*broadcast._client.keys(keys.presence_gateway("gw-dead*")))
    subscriber = subscribed(server, "replies", dead)
    broadcast.publish(REPLY, [1])
    assert received(subscriber) == []
    # And the dead id left the user's set.
    assert broadcast._client.smembers(keys.presence_user(1)) == set()
    subscriber.close()


def test_with_presence_unreadable_the_envelope_goes_to_the_response_topic(server, settings, monkeypatch, caplog):
    settings.CHAT = {**settings.CHAT, "WORKER_RESPONSE_TOPIC": "replies"}
    holder = online_on(broadcast._client, Keys("replies"), "gw-1", 1)

    def unreadable(*args, **kwargs):
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(routing, "live_holders", unreadable)
    subscriber = subscribed(server, "replies", holder)
    broadcast.publish(REPLY, [1])
    assert [channel for channel, _ in received(subscriber)] == [b"replies"]
    assert "presence not read (TimeoutError" in caplog.text
    subscriber.close()


def test_a_redis_error_becomes_a_publish_error(monkeypatch):
    class Down:
        def __getattr__(self, name: str):
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(broadcast, "_client", Down())
    with pytest.raises(PublishError, match="ConnectionError"):
        broadcast.publish(REPLY, [1])


def test_the_client_is_made_once_on_first_use_with_short_timeouts(monkeypatch, settings):
    settings.CHAT = {**settings.CHAT, "REDIS_URL": "redis://bus.example:6380/2"}
    made: list[tuple[str, dict]] = []

    def from_url(url: str, **options) -> fakeredis.FakeRedis:
        made.append((url, options))
        return fakeredis.FakeRedis()

    monkeypatch.setattr(broadcast, "_client", None)
    monkeypatch.setattr(redis.Redis, "from_url", from_url)
    broadcast.publish(REPLY, [1])
    broadcast.publish(REPLY, [2])
    assert made == [("redis://bus.example:6380/2", {"socket_connect_timeout": 2.0, "socket_timeout": 2.0})]
