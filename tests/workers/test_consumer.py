"""`workers.consumer.Consumer` on an in-process fake Redis: it answers requests and stops cleanly."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Iterator

import fakeredis
import pytest
from django.db import connections
from rest_framework.authtoken.models import Token

from workers import consumer as consumer_module
from workers.consumer import Consumer

TOPIC = "worker_process_test"
RESPONSE_TOPIC = "worker_response_test"
REPLY_TO = "gateway-test-replies"
WAIT = 5.0


@pytest.fixture
def redis_server(monkeypatch) -> fakeredis.FakeServer:
    """One fake Redis server; every client the consumer opens talks to it."""
    server = fakeredis.FakeServer()
    monkeypatch.setattr(consumer_module.redis.Redis, "from_url",
                        lambda *args, **kwargs: fakeredis.FakeRedis(server=server))
    # The loop notices a stop request when it wakes; wake often so that tests stop quickly.
    monkeypatch.setattr(consumer_module, "POLL_INTERVAL", 0.02)
    return server


@pytest.fixture
def client(redis_server) -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis(server=redis_server)
    yield client
    client.close()


@pytest.fixture
def listener(client) -> Iterator[Any]:
    """A subscription to the topics replies come back on, as a gateway has."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(REPLY_TO, RESPONSE_TOPIC)
    yield pubsub
    pubsub.close()


@pytest.fixture
def running_consumer(transactional_db, redis_server, client) -> Iterator[tuple[Consumer, threading.Thread]]:
    """A consumer answering on TOPIC in a thread; stopped (and its thread joined) before the database is flushed."""
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)

    def run() -> None:
        try:
            consumer.run()
        finally:
            # The thread's own database connection (persistent outside SQLite) would keep the
            # test database from being dropped.
            connections.close_all()

    thread = threading.Thread(target=run, name="consumer-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while subscribers(client, TOPIC) == 0:
        assert thread.is_alive(), "the consumer stopped before it subscribed"
        assert time.monotonic() < deadline, "the consumer did not subscribe"
        thread.join(timeout=0.01)
    yield consumer, thread
    consumer.request_stop()
    thread.join(timeout=WAIT)
    assert not thread.is_alive(), "the consumer did not stop"


def subscribers(client: fakeredis.FakeRedis, topic: str) -> int:
    return dict(client.pubsub_numsub(topic)).get(topic.encode(), 0)


def next_message(pubsub) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None and message["type"] == "message":
            return message
    raise AssertionError(f"no reply within {WAIT}s")


def bus_request(action: str, **fields: Any) -> str:
    return json.dumps({"uuid": uuid.uuid4().hex, "action": action, **fields, "session_data": None,
                       "request_id": "gateway-test:1", "reply_to": REPLY_TO})


@pytest.fixture
def alice_token(transactional_db, make_user) -> str:
    # transactional_db: the consumer's thread has its own database connection, so it sees
    # committed rows only.
    return Token.objects.get(user=make_user("alice")).key


def test_answers_a_request_on_its_reply_to_topic(alice_token, running_consumer, client, listener):
    consumer, _ = running_consumer
    client.publish(TOPIC, bus_request("authenticate", token=alice_token))
    message = next_message(listener)
    assert message["channel"] == REPLY_TO.encode()
    envelope = json.loads(message["data"])
    assert envelope["type"] == "success_response"
    assert envelope["request_id"] == "gateway-test:1"
    assert envelope["response"]["user"] == {"username": "alice"}
    assert envelope["session_data"]["user_pk"] > 0
    assert consumer.handled == 1


def test_a_reply_for_several_users_goes_to_the_response_topic(transactional_db, make_user, make_room,
                                                              running_consumer, client, listener):
    alice, bob = make_user("alice"), make_user("bob")
    room = make_room(alice, bob)
    request = json.loads(bus_request("new_message", room=room.pk.hex, text="hi"))
    request["session_data"] = {"user_pk": alice.pk}
    client.publish(TOPIC, json.dumps(request))
    message = next_message(listener)
    assert message["channel"] == RESPONSE_TOPIC.encode()
    envelope = json.loads(message["data"])
    assert envelope["send_to"] == sorted([alice.pk, bob.pk])
    assert envelope["response"]["message"]["text"] == "hi"


def test_goes_on_after_a_request_it_cannot_answer(alice_token, running_consumer, client, listener):
    consumer, _ = running_consumer
    client.publish(TOPIC, b"not json")
    client.publish(TOPIC, bus_request("authenticate", token="wrong"))
    envelope = json.loads(next_message(listener)["data"])
    assert envelope["response"]["error_code"] == "invalid_token"
    assert consumer.handled == 2


def test_goes_on_when_process_itself_raises(alice_token, running_consumer, client, listener, monkeypatch,
                                            caplog):
    consumer, _ = running_consumer
    real_process = consumer_module.process
    calls = []

    def failing_once(raw, response_topic, online=None):
        calls.append(raw)
        if len(calls) == 1:
            raise RuntimeError("database layer down")
        return real_process(raw, response_topic)

    monkeypatch.setattr(consumer_module, "process", failing_once)
    client.publish(TOPIC, bus_request("authenticate", token="first"))
    client.publish(TOPIC, bus_request("authenticate", token=alice_token))
    envelope = json.loads(next_message(listener)["data"])
    assert envelope["response"]["user"] == {"username": "alice"}
    assert len(calls) == 2
    assert "request not answered" in caplog.text


def test_request_stop_ends_run_and_unsubscribes(running_consumer, client):
    consumer, thread = running_consumer
    assert subscribers(client, TOPIC) == 1
    consumer.request_stop()
    thread.join(timeout=WAIT)
    assert not thread.is_alive()
    assert subscribers(client, TOPIC) == 0


def test_stop_requested_before_run_returns_at_once(redis_server, client):
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)
    consumer.request_stop()
    consumer.run()
    assert subscribers(client, TOPIC) == 0
    assert consumer.handled == 0


def test_a_second_worker_on_the_same_topic_is_warned_about(running_consumer, redis_server, caplog):
    second = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)
    thread = threading.Thread(target=second.run, daemon=True)
    with caplog.at_level("WARNING", logger="workers.consumer"):
        thread.start()
        deadline = time.monotonic() + WAIT
        while "has 2 subscribers" not in caplog.text:
            assert time.monotonic() < deadline, "no warning about the shared topic"
            thread.join(timeout=0.01)
    second.request_stop()
    thread.join(timeout=WAIT)
    assert not thread.is_alive()
