"""`bench.relay_worker`, the benchmark's baseline, answers as the real worker does: the same
envelope, topic, `send_to` and reply shape for the same request."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from bench.relay_worker import Directory, Relay
from workers import dispatch

REPLY_TO = "gateway-1-replies"
RESPONSE_TOPIC = "worker_response_test"


@pytest.fixture(autouse=True)
def keep_the_test_connection(monkeypatch):
    # process() closes stale database connections around each request, as a worker must; inside a
    # test's transaction that would close the test's own (as tests/workers/conftest.py explains).
    monkeypatch.setattr(dispatch, "close_old_connections", lambda: None)


def request(action: str, user_pk: int | None = None, **fields: Any) -> dict[str, Any]:
    return {"uuid": uuid.uuid4().hex, "action": action, **fields,
            "session_data": {"user_pk": user_pk} if user_pk is not None else {},
            "request_id": "gw-1:7", "reply_to": REPLY_TO}


def both(relay: Relay, data: dict[str, Any]) -> tuple[tuple[str, dict], tuple[str, dict]]:
    raw = json.dumps(data)
    real = dispatch.process(raw.encode(), RESPONSE_TOPIC)
    assert real is not None
    relayed = relay.process(raw)
    assert relayed is not None
    return (real.topic, json.loads(real.encode())), (relayed[0], json.loads(relayed[1]))


@pytest.fixture
def fixtures(make_user, make_room):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    room = make_room(alice, bob, carol)
    users = [{"id": u.pk, "username": u.username, "token": u.auth_token.key} for u in (alice, bob, carol)]
    return {"users": users, "rooms": [{"id": room.pk.hex, "name": room.name,
                                       "members": [carol.pk, alice.pk, bob.pk]}]}, alice, room


@pytest.mark.django_db
def test_authenticate_and_new_message_envelopes_match_the_real_worker(fixtures):
    data, alice, room = fixtures
    relay = Relay(Directory([data]), RESPONSE_TOPIC)

    (real_topic, real), (relay_topic, relayed) = both(relay, request("authenticate", token=alice.auth_token.key))
    assert real_topic == relay_topic == REPLY_TO
    # The relay's catalogue names the two actions it answers, as the real one marks them.
    real_actions, relayed_actions = real["response"].pop("actions"), relayed["response"].pop("actions")
    assert relayed_actions == {name: real_actions[name] for name in ("authenticate", "new_message")}
    assert relayed == real
    assert relayed["session_data"] == {"user_pk": alice.pk}

    for room_id in (room.pk.hex, str(room.pk)):  # both forms of a room id
        (real_topic, real), (relay_topic, relayed) = both(
            relay, request("new_message", alice.pk, room=room_id, text="hi"))
        assert real_topic == relay_topic == RESPONSE_TOPIC
        assert relayed.keys() == real.keys()
        assert relayed["send_to"] == real["send_to"] == sorted(m["id"] for m in data["users"])
        for key in ("type", "request_id", "session_data"):
            assert relayed[key] == real[key]
        real_message, relayed_message = real["response"].pop("message"), relayed["response"].pop("message")
        assert isinstance(real["response"].pop("cursor"), str) and isinstance(relayed["response"].pop("cursor"), str)
        assert relayed["response"] == real["response"]  # uuid, action, room as sent, status
        assert relayed_message.keys() == real_message.keys()
        assert relayed_message["user"] == real_message["user"] == {"username": "alice"}
        assert relayed_message["room"] == real_message["room"] == room.pk.hex
        assert isinstance(relayed_message["id"], int) and isinstance(relayed_message["timestamp"], float)


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["bad token", "no session", "other room", "empty text"])
def test_refusals_match_the_real_worker(fixtures, make_user, make_room, case):
    data, alice, room = fixtures
    dave = make_user("dave")
    elsewhere = make_room(dave)
    relay = Relay(Directory([data, {"users": [{"id": dave.pk, "username": "dave", "token": dave.auth_token.key}],
                                    "rooms": [{"id": elsewhere.pk.hex, "members": [dave.pk]}]}]), RESPONSE_TOPIC)
    sent = {
        "bad token": request("authenticate", token="nope"),
        "no session": request("new_message", room=room.pk.hex, text="hi"),
        "other room": request("new_message", alice.pk, room=elsewhere.pk.hex, text="hi"),
        "empty text": request("new_message", alice.pk, room=room.pk.hex, text="  "),
    }[case]
    (real_topic, real), (relay_topic, relayed) = both(relay, sent)
    assert real_topic == relay_topic == REPLY_TO
    assert relayed["response"]["error_code"] == real["response"]["error_code"]
    assert relayed == real


def test_message_ids_of_two_relays_never_clash():
    data = {"users": [{"id": 1, "username": "a", "token": "t"}], "rooms": [{"id": uuid.uuid4().hex, "members": [1]}]}
    relays = [Relay(Directory([data]), RESPONSE_TOPIC, first_message_id=n, message_id_step=2) for n in (1, 2)]
    ids = [json.loads(relay.process(json.dumps(request("new_message", 1, room=data["rooms"][0]["id"],
                                                       text="x")))[1])["response"]["message"]["id"]
           for _ in range(3) for relay in relays]
    assert sorted(ids) == [1, 2, 3, 4, 5, 6]
