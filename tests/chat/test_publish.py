"""`chat.publish`: server-side events to users or a room's members, checked at the caller."""

from __future__ import annotations

import json
import uuid

import fakeredis
import pytest
import redis

from chat import bus, publish
from chat.bus import PublishError
from tests.chat.conftest import REAL_PUBLISH, online_on
from websockets_gateway.keys import Keys


def test_to_users_publishes_one_event_frame_to_those_users(published):
    publish.to_users([3, 1, 3], "invoice.paid", {"invoice": 42})
    assert published == [({"action": "event", "event": "invoice.paid", "data": {"invoice": 42}}, [1, 3])]


def test_to_users_of_no_one_publishes_nothing(published):
    publish.to_users([], "invoice.paid", {})
    assert published == []


def test_to_room_publishes_to_its_members_in_one_query(room, alice, bob, carol, published,
                                                       django_assert_num_queries):
    with django_assert_num_queries(1):
        publish.to_room(room, "poll:closed", {"poll": 7})
    with django_assert_num_queries(1):
        publish.to_room(room.pk.hex, "poll:closed", {"poll": 8})
    with django_assert_num_queries(1):
        publish.to_room(room.pk, "poll:closed", {"poll": 9})
    frame = {"action": "event", "event": "poll:closed"}
    assert published == [({**frame, "data": {"poll": number}}, [alice.pk, bob.pk]) for number in (7, 8, 9)]


def test_a_room_without_members_gets_nothing(db, published):
    publish.to_room(uuid.uuid4(), "poll:closed", {})
    assert published == []


@pytest.mark.parametrize("event", ["", "Invoice", "1st", "a b", "x" * 65, "é", "a/b"])
def test_a_bad_event_name_is_a_value_error(event, published):
    with pytest.raises(ValueError, match="event must be"):
        publish.to_users([1], event, {})
    assert published == []


def test_the_longest_name_and_every_allowed_character(published):
    publish.to_users([1], "a" * 64, {})
    publish.to_users([1], "a0_.:-z", {})
    assert [response["event"] for response, _ in published] == ["a" * 64, "a0_.:-z"]


@pytest.mark.parametrize("event, data", [(None, {}), (b"ping", {}), ("ping", [1]), ("ping", None), ("ping", "x"),
                                         ("ping", {"when": {1, 2}}), ("ping", {"object": object()})])
def test_a_name_not_a_string_or_data_not_a_json_dict_is_a_type_error(event, data, published):
    with pytest.raises(TypeError):
        publish.to_users([1], event, data)
    assert published == []


@pytest.mark.parametrize("user_ids", ["12", 1, [True], [1.0], ["1"], None])
def test_user_ids_must_be_ints(user_ids, published):
    with pytest.raises(TypeError):
        publish.to_users(user_ids, "ping", {})
    assert published == []


@pytest.mark.parametrize("room, error", [("nope", ValueError), (42, TypeError), (None, TypeError)])
def test_a_bad_room_is_refused_before_any_query(room, error, published):
    # No database in this test: a query would fail it.
    with pytest.raises(error):
        publish.to_room(room, "ping", {})
    assert published == []


def test_the_envelope_on_the_bus_is_a_workers_reply_for_several_users(monkeypatch, settings):
    settings.CHAT = {**settings.CHAT, "WORKER_RESPONSE_TOPIC": "replies"}
    monkeypatch.setattr(bus, "publish", REAL_PUBLISH)
    server = fakeredis.FakeServer()
    monkeypatch.setattr(bus, "_client", fakeredis.FakeRedis(server=server))
    holder = online_on(bus._client, Keys("replies"), "gw-1", 1, 2)
    subscriber = fakeredis.FakeRedis(server=server).pubsub()
    subscriber.subscribe(holder)
    assert subscriber.get_message(timeout=1)["type"] == "subscribe"
    publish.to_users([2, 1], "note", {"text": "é"})
    message = subscriber.get_message(timeout=1)
    assert json.loads(message["data"]) == {
        "type": "success_response", "request_id": None, "send_to": [1, 2], "session_data": None,
        "response": {"action": "event", "event": "note", "data": {"text": "é"}}}
    subscriber.close()


def test_redis_down_raises_publish_error_at_the_caller(monkeypatch):
    class Down:
        def __getattr__(self, name: str):
            raise redis.ConnectionError("Connection refused.")

    monkeypatch.setattr(bus, "publish", REAL_PUBLISH)
    monkeypatch.setattr(bus, "_client", Down())
    with pytest.raises(PublishError, match="ConnectionError"):
        publish.to_users([1], "note", {})
    assert publish.PublishError is PublishError
