"""`workers.discovery`: a worker's unique topic, and its entry in the registry the gateways read."""

from __future__ import annotations

import re

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway.keys import Keys
from workers.consumer import Consumer
from workers.discovery import HOST_PART_MAX, Registration, unique_topic

# The consumer tests' fake Redis (every client the consumer opens talks to it) and a client of it.
from .test_consumer import RESPONSE_TOPIC, TOPIC, client, consumer_thread, redis_server, wait_for  # noqa: F401

KEYS = Keys(RESPONSE_TOPIC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def registered(client: fakeredis.FakeRedis, topic: str) -> bool:
    return client.sismember(KEYS.worker_topics, topic) and client.exists(KEYS.worker_heartbeat(topic)) == 1


# The unique topic

def test_a_taken_topic_names_the_host_and_pid_and_is_unique():
    topics = {unique_topic() for _ in range(100)}
    assert len(topics) == 100
    assert unique_topic("web-7", 12, "ab12cd34") == "chat.worker.web-7-12-ab12cd34"


@pytest.mark.parametrize("host", ["my host.example.com:8/x", "ünï{code}*?", "", "-" * 5, "h" * 300])
def test_a_taken_topic_holds_only_characters_safe_for_a_channel_key_and_label(host):
    topic = unique_topic(host, 1, "ab")
    assert re.fullmatch(r"chat\.worker\.[A-Za-z0-9_-]+", topic), topic
    assert len(topic) <= len("chat.worker.") + HOST_PART_MAX + len("-1-ab")


# Registration

def test_register_writes_the_heartbeat_with_its_ttl_and_adds_the_topic(fake):
    registration = Registration(fake, "w1", KEYS, ttl=6.0)
    registration.register()
    assert registered(fake, "w1")
    assert 5000 < fake.pttl(KEYS.worker_heartbeat("w1")) <= 6000
    assert registration.registered


def test_refresh_writes_again_only_once_a_third_of_the_ttl_has_passed(fake):
    clock = Clock()
    registration = Registration(fake, "w1", KEYS, ttl=6.0, clock=clock)
    registration.refresh()
    fake.delete(KEYS.worker_heartbeat("w1"))
    fake.srem(KEYS.worker_topics, "w1")  # as a reader that raced the refresh would
    clock.now += 1.9
    registration.refresh()
    assert not registered(fake, "w1")
    clock.now += 0.1
    registration.refresh()
    assert registered(fake, "w1")


def test_refresh_with_force_writes_at_once(fake):
    registration = Registration(fake, "w1", KEYS, ttl=6.0, clock=Clock())
    registration.refresh()
    fake.flushall()  # Redis restarted empty
    registration.refresh(force=True)
    assert registered(fake, "w1")


def test_the_heartbeat_expires_without_refreshes():
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    Registration(client, "w1", KEYS, ttl=1.0).register()
    wait_for(lambda: not client.exists(KEYS.worker_heartbeat("w1")), "the heartbeat expired")
    assert client.sismember(KEYS.worker_topics, "w1"), "the set is the readers' to prune"


def test_a_failed_refresh_is_logged_and_retried_at_the_next_call(fake, monkeypatch, caplog):
    clock = Clock()
    registration = Registration(fake, "w1", KEYS, ttl=6.0, clock=clock)
    real_pipeline = fake.pipeline
    failures = []

    def pipeline(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise RedisConnectionError("Connection refused")
        return real_pipeline(*args, **kwargs)

    monkeypatch.setattr(fake, "pipeline", pipeline)
    registration.refresh()
    assert not registration.registered and "registration not refreshed" in caplog.text
    registration.refresh()  # no time passed: retried all the same, since the last one failed
    assert registered(fake, "w1")


def test_withdraw_removes_the_topic_and_its_heartbeat(fake):
    registration = Registration(fake, "w1", KEYS, ttl=6.0)
    Registration(fake, "w2", KEYS, ttl=6.0).register()
    registration.register()
    registration.withdraw()
    assert not fake.exists(KEYS.worker_heartbeat("w1"))
    assert fake.smembers(KEYS.worker_topics) == {b"w2"}
    assert not registration.registered


def test_a_failed_withdraw_is_logged_not_raised(fake, monkeypatch, caplog):
    registration = Registration(fake, "w1", KEYS, ttl=6.0)

    def refused(*args, **kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(fake, "pipeline", refused)
    registration.withdraw()
    assert "not withdrawn from the registry" in caplog.text


def test_two_deployments_keep_two_registries(fake):
    Registration(fake, "w1", KEYS, ttl=6.0).register()
    Registration(fake, "w1", Keys("staging"), ttl=6.0).register()
    Registration(fake, "w1", KEYS, ttl=6.0).withdraw()
    assert fake.smembers(Keys("staging").worker_topics) == {b"w1"}


# The consumer keeps its topic registered

def test_a_running_consumer_is_registered_and_leaves_the_registry_when_it_stops(redis_server, client):
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC, ttl=3.0)
    with consumer_thread(consumer):
        wait_for(lambda: registered(client, TOPIC), "the consumer registered")
    assert not client.exists(KEYS.worker_heartbeat(TOPIC))
    assert not client.sismember(KEYS.worker_topics, TOPIC)


def test_the_consumer_refreshes_its_heartbeat_from_its_loop(redis_server, client):
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC, ttl=1.0)
    with consumer_thread(consumer):
        wait_for(lambda: registered(client, TOPIC), "the consumer registered")
        # Taken out from under it: the next refresh (a third of the TTL later) puts it back.
        client.delete(KEYS.worker_heartbeat(TOPIC))
        client.srem(KEYS.worker_topics, TOPIC)
        wait_for(lambda: registered(client, TOPIC), "the consumer registered again")


def test_the_consumer_registers_again_when_it_subscribes_again(redis_server, client, monkeypatch):
    consumer = Consumer("redis://fake", TOPIC, RESPONSE_TOPIC, ttl=600.0)
    real_pubsub = consumer._redis.pubsub
    made = []

    def pubsub(**kwargs):
        subscription = real_pubsub(**kwargs)
        made.append(subscription)
        if len(made) == 1:
            real_get = subscription.get_message

            def breaks_once_redis_restarted(timeout=0.0, **kw):
                if not client.exists(KEYS.worker_heartbeat(TOPIC)):
                    raise RedisConnectionError("Connection closed by server.")
                return real_get(timeout=timeout, **kw)

            subscription.get_message = breaks_once_redis_restarted
        return subscription

    monkeypatch.setattr(consumer._redis, "pubsub", pubsub)
    with consumer_thread(consumer):
        wait_for(lambda: registered(client, TOPIC), "the consumer registered")
        client.flushall()  # Redis restarted empty; the TTL is far off, so only a new registration helps
        wait_for(lambda: len(made) == 2 and registered(client, TOPIC), "registered again after resubscribing")
    assert not registered(client, TOPIC)


def test_a_worker_given_its_topic_registers_it_too(redis_server, client):
    consumer = Consumer("redis://fake", "worker_process_1", RESPONSE_TOPIC)
    with consumer_thread(consumer):
        wait_for(lambda: registered(client, "worker_process_1"), "the named topic registered")
