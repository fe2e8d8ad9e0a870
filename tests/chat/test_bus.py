"""`chat.bus`: the publisher of replies for several users, on an in-process Redis."""

from __future__ import annotations

import json

import fakeredis
import pytest
import redis

from chat import bus as broadcast
from chat.events import PublishError
from tests.chat.conftest import REAL_PUBLISH

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


def test_publish_sends_a_worker_envelope_for_several_users_on_the_response_topic(server, settings):
    settings.CHAT = {**settings.CHAT, "WORKER_RESPONSE_TOPIC": "replies"}
    subscriber = fakeredis.FakeRedis(server=server).pubsub()
    subscriber.subscribe("replies")
    assert subscriber.get_message(timeout=1)["type"] == "subscribe"
    broadcast.publish(REPLY, [3, 1])
    message = subscriber.get_message(timeout=1)
    assert message["channel"] == b"replies"
    expected = {"type": "success_response", "request_id": None, "send_to": [3, 1], "session_data": None,
                "response": REPLY}
    # Compact UTF-8 JSON, as the workers send it.
    assert message["data"] == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    subscriber.close()


def test_a_redis_error_becomes_a_publish_error(monkeypatch):
    class Down:
        def publish(self, topic: str, data: str) -> int:
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
