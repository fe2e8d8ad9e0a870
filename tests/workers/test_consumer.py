"""`workers.consumer.Consumer` on an in-process fake Redis: it answers requests and stops cleanly."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from typing import Any, Iterator

import fakeredis
import redis
import pytest
from django.db import connections
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework.authtoken.models import Token

from chat import routing as routing_module
from websockets_gateway import reconnect as reconnect_module
from tests.chat.conftest import online_on
from websockets_gateway.keys import Keys
from websockets_gateway.logs import JsonFormatter
from workers import consumer as consumer_module
from workers.consumer import Consumer

TOPIC = "worker_process_test"
RESPONSE_TOPIC = "worker_response_test"
REPLY_TO = "gateway-test-replies"
KEYS = Keys(RESPONSE_TOPIC)
WAIT = 5.0


@pytest.fixture
def redis_server(monkeypatch) -> fakeredis.FakeServer:
    """One fake Redis server; every client the consumer opens talks to it."""
    server = fakeredis.FakeServer()
    monkeypatch.setattr(redis.Redis, "from_url",
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


def received_on(pubsub, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The next `count` messages, then a check that no other follows at once."""
    got = [next_message(pubsub) for _ in range(count)]
    assert pubsub.get_message(timeout=0.2) is None
    return sorted((message["channel"].decode(), json.loads(message["data"])) for message in got)


def test_a_reply_for_several_users_goes_to_their_gateways_and_the_requesters(
        transactional_db, make_user, make_room, running_consumer, client):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    room = make_room(alice, bob)
    bobs = online_on(client, KEYS, "gw-bob", bob.pk)
    carols = online_on(client, KEYS, "gw-carol", carol.pk)  # alive, but holds no member of the room
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(REPLY_TO, RESPONSE_TOPIC, bobs, carols)
    request = json.loads(bus_request("new_message", room=room.pk.hex, text="hi"))
    request["session_data"] = {"user_pk": alice.pk}
    client.publish(TOPIC, json.dumps(request))
    [(first_topic, first), (second_topic, second)] = received_on(pubsub, 2)
    # Once to bob's gateway, once to the requester's (its request completes there): nowhere else.
    assert (first_topic, second_topic) == tuple(sorted([REPLY_TO, bobs]))
    assert first == second
    assert first["send_to"] == sorted([alice.pk, bob.pk])
    assert first["response"]["message"]["text"] == "hi"
    pubsub.close()


def test_a_reply_whose_recipients_share_the_requesters_gateway_goes_there_once(
        transactional_db, make_user, make_room, running_consumer, client):
    alice, bob = make_user("alice"), make_user("bob")
    room = make_room(alice, bob)
    # The requester's reply topic is its gateway's: both members are held there.
    topic = online_on(client, KEYS, "gw-both", alice.pk, bob.pk)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(topic, RESPONSE_TOPIC)
    request = json.loads(bus_request("new_message", room=room.pk.hex, text="hi"))
    request.update(session_data={"user_pk": alice.pk}, reply_to=topic)
    client.publish(TOPIC, json.dumps(request))
    [(channel, envelope)] = received_on(pubsub, 1)
    assert channel == topic and envelope["response"]["message"]["text"] == "hi"
    pubsub.close()


def test_without_presence_a_reply_for_several_users_goes_to_every_gateway(
        transactional_db, make_user, make_room, running_consumer, client, monkeypatch):
    consumer, _ = running_consumer
    alice, bob = make_user("alice"), make_user("bob")
    room = make_room(alice, bob)
    online_on(client, KEYS, "gw-bob", bob.pk)

    def down(*args, **kwargs):
        raise RedisConnectionError("presence unreadable (test)")

    monkeypatch.setattr(routing_module, "live_holders", down)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(REPLY_TO, RESPONSE_TOPIC, Keys(RESPONSE_TOPIC).gateway_reply_topic("gw-bob"))
    request = json.loads(bus_request("new_message", room=room.pk.hex, text="hi"))
    request["session_data"] = {"user_pk": alice.pk}
    client.publish(TOPIC, json.dumps(request))
    # The response topic alone: every gateway reads it, the requester's too (a copy on its own
    # topic as well would reach it twice).
    [(channel, envelope)] = received_on(pubsub, 1)
    assert channel == RESPONSE_TOPIC and envelope["response"]["message"]["text"] == "hi"
    assert sample(consumer, "chat_worker_routing_fallbacks_total") == 1
    pubsub.close()


def test_goes_on_after_a_request_it_cannot_answer(alice_token, running_consumer, client, listener):
    consumer, _ = running_consumer
    client.publish(TOPIC, b"not json")
    client.publish(TOPIC, bus_request("authenticate", token="wrong"))
    envelope = json.loads(next_message(listener)["data"])
    assert envelope["response"]["error_code"] == "invalid_token"
    assert consumer.handled == 2


def failing_first_batch(monkeypatch) -> tuple[list, threading.Event]:
    """Make the consumer's first batch fail as the database layer failing would; record batches."""
    real_process_batch = consumer_module.process_batch
    calls: list = []
    failed = threading.Event()

    def failing_once(raws, response_topic, online=None):
        calls.append(list(raws))
        if len(calls) == 1:
            failed.set()
            raise RuntimeError("database layer down")
        return real_process_batch(raws, response_topic, online)

    monkeypatch.setattr(consumer_module, "process_batch", failing_once)
    return calls, failed


def test_goes_on_when_process_itself_raises(alice_token, running_consumer, client, listener, monkeypatch,
                                            caplog):
    consumer, _ = running_consumer
    calls, failed = failing_first_batch(monkeypatch)
    client.publish(TOPIC, bus_request("authenticate", token="first"))
    assert failed.wait(WAIT)
    client.publish(TOPIC, bus_request("authenticate", token=alice_token))
    envelope = json.loads(next_message(listener)["data"])
    assert envelope["response"]["user"] == {"username": "alice"}
    assert len(calls) == 2
    assert "1 requests not answered" in caplog.text


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


def test_a_broken_subscription_is_closed_before_the_backoff_and_subscribed_again_after_it(
        redis_server, client, monkeypatch, caplog):
    # When Redis kills a worker's pub/sub connection, redis-py connects it again and subscribes
    # it again by itself before raising. Modelled here by a subscription that raises while it
    # is still subscribed: during the backoff the topic must have no subscriber, not one that
    # nobody reads (a request published to it would count as received and never be answered).
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)
    real_pubsub = consumer._redis.pubsub
    opened = []

    def pubsub(**kwargs):
        subscription = real_pubsub(**kwargs)
        opened.append(subscription)
        if len(opened) == 1:
            def killed(*args, **kwargs):
                raise RedisConnectionError("Connection closed by server.")

            subscription.get_message = killed
        return subscription

    subscribers_during_backoff = []
    backoffs = []

    def sleep(seconds):
        subscribers_during_backoff.append(subscribers(client, TOPIC))
        backoffs.append(seconds)

    real_serve = consumer._serve

    def serve(subscription):
        if subscription is opened[-1] and len(opened) == 2:
            # Subscribed again after the backoff: stop there.
            assert subscribers(client, TOPIC) == 1
            consumer.request_stop()
        real_serve(subscription)

    monkeypatch.setattr(consumer._redis, "pubsub", pubsub)
    monkeypatch.setattr(consumer_module.time, "sleep", sleep)
    monkeypatch.setattr(consumer, "_serve", serve)
    with caplog.at_level("WARNING", logger="workers.consumer"):
        consumer.run()
    assert subscribers_during_backoff == [0]
    assert len(backoffs) == 1
    assert 0.5 * consumer_module.RECONNECT_BACKOFF_FIRST <= backoffs[0] <= 1.5 * consumer_module.RECONNECT_BACKOFF_FIRST
    assert len(opened) == 2
    assert "lost Redis" in caplog.text
    assert subscribers(client, TOPIC) == 0


def test_the_reconnect_backoff_doubles_up_to_its_cap(redis_server, monkeypatch):
    # Every subscribe fails (Redis down): the delays grow, then stay at the cap, whose worst
    # case with the jitter (1.5 times the cap) keeps a worker back within seconds of Redis.
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)
    real_pubsub = consumer._redis.pubsub

    def refusing(**kwargs):
        subscription = real_pubsub(**kwargs)

        def refuse(*channels):
            raise RedisConnectionError("Error 111 connecting. Connection refused.")

        subscription.subscribe = refuse
        return subscription

    delays = []

    def sleep(seconds):
        delays.append(seconds)
        if len(delays) == 10:
            consumer.request_stop()

    monkeypatch.setattr(consumer._redis, "pubsub", refusing)
    monkeypatch.setattr(consumer_module.time, "sleep", sleep)
    monkeypatch.setattr(reconnect_module.random, "random", lambda: 0.5)  # no jitter: the bare delays
    consumer.run()
    first, cap = consumer_module.RECONNECT_BACKOFF_FIRST, consumer_module.RECONNECT_BACKOFF_MAX
    expected = [min(first * 2 ** n, cap) for n in range(10)]
    assert delays == pytest.approx(expected)
    assert delays[-1] == cap and 1.5 * cap < 5.0


# Metrics and log lines

def sample(consumer: Consumer, name: str, **labels: str) -> float:
    return consumer.metrics.registry.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_and_timed_by_action_and_status(alice_token, running_consumer, client, listener):
    consumer, _ = running_consumer
    client.publish(TOPIC, b"not json")
    client.publish(TOPIC, bus_request("authenticate", token="wrong"))
    client.publish(TOPIC, bus_request("authenticate", token=alice_token))
    client.publish(TOPIC, bus_request("explode"))
    for _ in range(3):
        next_message(listener)
    assert sample(consumer, "chat_worker_requests_total", action="authenticate", status="invalid_token") == 1
    assert sample(consumer, "chat_worker_requests_total", action="authenticate", status="success") == 1
    assert sample(consumer, "chat_worker_requests_total", action="unknown", status="invalid_action") == 1
    assert sample(consumer, "chat_worker_request_duration_seconds_count", action="authenticate") == 2
    assert 0 < sample(consumer, "chat_worker_request_duration_seconds_sum", action="authenticate") < WAIT
    assert sample(consumer, "chat_worker_errors_total", kind="malformed_request") == 1
    assert sample(consumer, "chat_worker_errors_total", kind="server_error") == 0
    assert sample(consumer, "chat_worker_info", topic=TOPIC, pid=str(os.getpid())) == 1


def test_a_request_the_worker_cannot_answer_is_counted(alice_token, running_consumer, client, listener, monkeypatch):
    consumer, _ = running_consumer
    _, failed = failing_first_batch(monkeypatch)
    client.publish(TOPIC, bus_request("authenticate", token="first"))
    assert failed.wait(WAIT)
    client.publish(TOPIC, bus_request("authenticate", token=alice_token))
    next_message(listener)
    assert sample(consumer, "chat_worker_errors_total", kind="unanswered") == 1
    assert sample(consumer, "chat_worker_requests_total", action="authenticate", status="success") == 1


def test_a_handler_that_raises_counts_a_server_error(transactional_db, make_user, make_room, running_consumer,
                                                      client, listener, replace_handler):
    consumer, _ = running_consumer
    alice = make_user("alice")
    room = make_room(alice)

    def broken(request):
        raise RuntimeError("bug")

    replace_handler("select_room", broken)
    request = json.loads(bus_request("select_room", room=room.pk.hex))
    request["session_data"] = {"user_pk": alice.pk}
    client.publish(TOPIC, json.dumps(request))
    assert json.loads(next_message(listener)["data"])["response"]["error_code"] == "server_error"
    assert sample(consumer, "chat_worker_requests_total", action="select_room", status="server_error") == 1
    assert sample(consumer, "chat_worker_errors_total", kind="server_error") == 1


def test_each_request_is_logged_once_with_its_request_id_and_no_secret(alice_token, running_consumer, client,
                                                                     listener, caplog):
    with caplog.at_level(logging.DEBUG):
        client.publish(TOPIC, bus_request("authenticate", token=alice_token))
        next_message(listener)
    [handled] = [r for r in caplog.records if r.getMessage() == "request handled"]
    assert handled.name == "workers.consumer" and handled.levelno == logging.INFO
    assert (handled.request_id, handled.action, handled.status, handled.topic) == (
        "gateway-test:1", "authenticate", "success", TOPIC)
    assert isinstance(handled.duration_ms, float) and handled.duration_ms >= 0
    entry = json.loads(JsonFormatter().format(handled))
    assert entry["request_id"] == "gateway-test:1" and entry["message"] == "request handled"
    for record in caplog.records:
        assert alice_token not in JsonFormatter().format(record)


def test_a_lost_redis_connection_is_counted(redis_server, client, monkeypatch):
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)
    real_pubsub = consumer._redis.pubsub
    attempts = []

    def pubsub(**kwargs):
        subscription = real_pubsub(**kwargs)
        attempts.append(subscription)
        if len(attempts) <= 2:
            def refuse(*channels):
                raise RedisConnectionError("Connection refused")

            subscription.subscribe = refuse
        else:
            consumer.request_stop()
        return subscription

    monkeypatch.setattr(consumer._redis, "pubsub", pubsub)
    monkeypatch.setattr(consumer_module.time, "sleep", lambda seconds: None)
    consumer.run()
    assert sample(consumer, "chat_worker_redis_reconnects_total") == 2


def test_requests_waiting_together_are_answered_as_one_batch(alice_token, running_consumer, client, listener,
                                                             monkeypatch):
    consumer, _ = running_consumer
    real_process_batch = consumer_module.process_batch
    sizes: list[int] = []
    first_taken, release = threading.Event(), threading.Event()

    def recording(raws, response_topic, online=None):
        sizes.append(len(raws))
        if len(sizes) == 1:
            first_taken.set()
            release.wait(WAIT)  # the others arrive while the first is being answered
        return real_process_batch(raws, response_topic, online)

    monkeypatch.setattr(consumer_module, "process_batch", recording)
    monkeypatch.setattr(consumer_module, "BATCH_MAX", 3)
    client.publish(TOPIC, bus_request("authenticate", token=alice_token))
    assert first_taken.wait(WAIT)
    for _ in range(4):
        client.publish(TOPIC, bus_request("authenticate", token=alice_token))
    release.set()
    replies = [json.loads(next_message(listener)["data"]) for _ in range(5)]
    assert all(reply["response"]["status"] == "success" for reply in replies)
    # What waited is taken together, BATCH_MAX at a time.
    assert sizes == [1, 3, 1]
    assert consumer.handled == 5


def test_requests_in_hand_are_answered_when_the_subscription_breaks_while_gathering(alice_token, redis_server,
                                                                                    client, listener):
    # A request Redis handed us is answered even when the subscription breaks while more are
    # gathered; the error then goes up, and run() subscribes again.
    from redis.exceptions import ConnectionError as RedisConnectionError

    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)

    class BreakingPubSub:
        def __init__(self):
            self.calls = 0

        def get_message(self, timeout=0.0):
            self.calls += 1
            if self.calls == 1:
                return {"type": "message", "data": bus_request("authenticate", token=alice_token)}
            raise RedisConnectionError("Connection closed by server.")

        def unsubscribe(self, *topics):
            raise RedisConnectionError("Connection refused")  # down for good

        def close(self):
            self.closed = True

    broken = BreakingPubSub()
    with pytest.raises(RedisConnectionError):
        consumer._serve(broken)
    # Closed before the answer went out, so that no resubscribed connection sat unread meanwhile.
    assert broken.closed
    envelope = json.loads(next_message(listener)["data"])
    assert envelope["response"]["user"] == {"username": "alice"}
    assert consumer.handled == 1


def test_requests_a_broken_but_resubscribed_subscription_accepted_are_answered(alice_token, redis_server,
                                                                               client, listener):
    # redis-py subscribed the connection again before raising: Redis handed it one more request.
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)

    class ResubscribedPubSub:
        subscribed = True
        unsubscribed = False

        def unsubscribe(self, *topics):
            self.unsubscribed = True

        def get_message(self, timeout=0.0):
            if self.unsubscribed and self.subscribed:
                self.subscribed = False  # the confirmation comes after what was published before it
                return {"type": "message", "data": bus_request("authenticate", token=alice_token)}
            return None

    pubsub = ResubscribedPubSub()
    consumer._answer_stragglers(pubsub)
    assert pubsub.unsubscribed
    envelope = json.loads(next_message(listener)["data"])
    assert envelope["response"]["user"] == {"username": "alice"}
    assert consumer.handled == 1


@contextlib.contextmanager
def consumer_thread(consumer: Consumer) -> Iterator[threading.Thread]:
    """Run the consumer in a thread for the block; stop it and join it after."""
    thread = threading.Thread(target=consumer.run, name="consumer-under-test", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        consumer.request_stop()
        thread.join(timeout=WAIT)
        connections.close_all()
    assert not thread.is_alive(), "the consumer did not stop"


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
        time.sleep(0.01)


def test_a_subscription_that_answers_no_probe_is_made_again(alice_token, redis_server, client, listener,
                                                             monkeypatch, caplog):
    # A partition that outlived the connection: the subscription hears nothing, its PING included.
    # Redis still counts it, so the requests published to it would all time out; made again, the
    # next request is answered.
    monkeypatch.setattr(consumer_module, "PROBE_INTERVAL", 0.05)
    monkeypatch.setattr(consumer_module, "PROBE_TIMEOUT", 0.05)
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)
    real_pubsub = consumer._redis.pubsub
    made, pings = [], []

    def pubsub(**kwargs):
        subscription = real_pubsub(**kwargs)
        made.append(subscription)
        if len(made) == 1:
            def nothing(timeout=0.0, **kw):
                time.sleep(min(timeout or 0.0, 0.01))
                return None

            subscription.get_message, subscription.ping = nothing, lambda *args: pings.append(args)
        return subscription

    monkeypatch.setattr(consumer._redis, "pubsub", pubsub)
    with consumer_thread(consumer):
        wait_for(lambda: len(made) >= 2 and subscribers(client, TOPIC) == 1, "the silent subscription made again")
        assert len(pings) == 1
        assert sample(consumer, "chat_worker_redis_reconnects_total") == 1
        client.publish(TOPIC, bus_request("authenticate", token=alice_token))
        assert json.loads(next_message(listener)["data"])["response"]["status"] == "success"
    assert "no answer to a PING" in caplog.text


def test_a_quiet_subscription_that_answers_its_probes_is_kept(alice_token, redis_server, client, listener,
                                                               monkeypatch):
    monkeypatch.setattr(consumer_module, "PROBE_INTERVAL", 0.01)
    monkeypatch.setattr(consumer_module, "PROBE_TIMEOUT", 0.5)
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)
    real_pubsub = consumer._redis.pubsub
    pings = []

    def pubsub(**kwargs):
        subscription = real_pubsub(**kwargs)
        ping = subscription.ping
        subscription.ping = lambda *args: (pings.append(args), ping(*args))[1]
        return subscription

    monkeypatch.setattr(consumer._redis, "pubsub", pubsub)
    with consumer_thread(consumer):
        wait_for(lambda: len(pings) >= 5, "five probes, each sent once the one before was answered")
        client.publish(TOPIC, bus_request("authenticate", token=alice_token))
        assert json.loads(next_message(listener)["data"])["response"]["status"] == "success"
        assert sample(consumer, "chat_worker_redis_reconnects_total") == 0


def test_a_failed_subscriber_count_keeps_the_subscription(alice_token, redis_server, client, listener, monkeypatch):
    # After a Redis restart the consumer's reply connection is the old, dead one: the first command
    # on it (the count of the topic's subscribers) fails. The subscription is good all the same.
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC)
    real_numsub = consumer._redis.pubsub_numsub
    failures = []

    def numsub(*topics):
        if not failures:
            failures.append(topics)
            raise RedisConnectionError("Connection closed by server.")
        return real_numsub(*topics)

    monkeypatch.setattr(consumer._redis, "pubsub_numsub", numsub)
    with consumer_thread(consumer):
        wait_for(lambda: subscribers(client, TOPIC) == 1, "the consumer subscribed")
        client.publish(TOPIC, bus_request("authenticate", token=alice_token))
        assert json.loads(next_message(listener)["data"])["response"]["status"] == "success"
        assert failures and sample(consumer, "chat_worker_redis_reconnects_total") == 0
