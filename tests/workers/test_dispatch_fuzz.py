"""Hostile input into every worker handler through `workers.dispatch.handle()`, the error boundary
of one request: whatever a client puts in a frame (and whatever the session data), the requester
gets exactly one well-formed envelope, and never `server_error`: that code is for the worker's own
faults, so a `server_error` on client input is a bug.

The database is the real test database; rooms and messages the fuzzing creates pile up within a
test, which only widens what later examples meet.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from chat import fields
from chat.models import ChatMessage
from tests.websockets_gateway.test_protocol_fuzz import (
    ERROR_CODES,
    FIELD_VALUES,
    PROTOCOL_KEYS,
    assert_wire_safe,
    broken_text,
    huge_ints,
    json_values,
    protocol_frames,
    short_text,
)
from workers import dispatch
from workers.dispatch import Outgoing
from workers.actions import registry

from .test_dispatch import REPLY_TO, RESPONSE_TOPIC, assert_error, bus_request, send

REQUEST_ID = "gateway-fuzz:1"
FUZZ_SETTINGS = settings(max_examples=60, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def everyone_online(user_ids):
    return set(user_ids)


@pytest.fixture
def world(alice, bob, carol, room, make_room):
    """alice and bob share `room`; carol has a room of her own; plus a user who is gone."""
    from django.contrib.auth import get_user_model

    gone = get_user_model().objects.create_user(username="gone", is_active=False)
    ChatMessage.objects.create(user=alice, room=room, text="first")
    ChatMessage.objects.create(user=bob, room=room, text="second")
    return {"alice": alice, "bob": bob, "carol": carol, "gone": gone, "room": room,
            "carols_room": make_room(carol, name="carol's"), "token": Token.objects.get(user=bob).key}


def sessions(world: dict[str, Any]) -> st.SearchStrategy[Any]:
    """The session data a request carries: a real user mostly, else none, a gone user, or garbage."""
    users = [world[name].pk for name in ("alice", "bob", "carol")]
    return st.one_of(
        st.sampled_from([{"user_pk": pk} for pk in users[:2]]),
        st.sampled_from([{"user_pk": pk} for pk in users]),
        st.sampled_from([{"user_pk": pk} for pk in users[:2]]),
        st.sampled_from([{"user_pk": pk} for pk in users[:2]]),
        st.sampled_from([{"user_pk": pk} for pk in users[:2]]),
        st.sampled_from([None, {}, {"user_pk": world["gone"].pk}, {"user_pk": 10 ** 9}, {"user_pk": True},
                         {"user_pk": str(users[0])}, {"user_pk": float(users[0])}]),
        st.builds(lambda pk: {"user_pk": pk}, st.one_of(huge_ints, json_values)),
        json_values,
    )


def requests(world: dict[str, Any], action: str) -> st.SearchStrategy[dict[str, Any]]:
    """Requests for `action`: mostly plausible frames with a few hostile fields, else anything at all."""
    room = world["room"].pk
    real_rooms = st.sampled_from([room.hex, str(room), room.hex.upper(), world["carols_room"].pk.hex])
    names = st.sampled_from(["alice", "bob", "carol", "gone"])
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "uuid": st.one_of(st.uuids().map(lambda value: value.hex), st.uuids().map(lambda value: value.hex),
                          st.text(min_size=1, max_size=64), broken_text.filter(lambda text: len(text) <= 64)),
        "room": real_rooms,
        "text": st.one_of(st.text(min_size=1, max_size=50), broken_text, st.just("hello"), st.just("hello")),
        "token": st.sampled_from([world["token"], world["token"] + "\x00", "\ud800", "nope"]),
        "members": st.lists(names, max_size=4),
        "to": names,
        "before": st.one_of(st.none(), st.integers(0, 50), huge_ints),
        "after": st.one_of(st.none(), st.integers(0, 50), huge_ints),
        "limit": st.one_of(st.none(), st.integers(0, 501)),
        "message": st.one_of(st.integers(0, 50), huge_ints),
        "name": st.one_of(st.text(max_size=30), broken_text, st.just("a room"), st.just("a room")),
    }

    often = st.sampled_from([True] * 9 + [False])  # (st.integers leans to its bounds)

    @st.composite
    def plausible_frame(draw: st.DrawFn) -> dict[str, Any]:
        frame = {"uuid": draw(plausible["uuid"]), "action": action}
        for key in PROTOCOL_KEYS[2:]:
            if draw(often):
                frame[key] = draw(plausible[key])
        # Then a few fields made hostile: any JSON value, or gone.
        hostile = draw(st.sampled_from([0, 0, 1, 1, 2]))
        for key in draw(st.lists(st.sampled_from(PROTOCOL_KEYS), min_size=hostile, max_size=hostile, unique=True)):
            if draw(st.booleans()):
                frame[key] = draw(FIELD_VALUES[key])
            else:
                frame.pop(key, None)
        frame.update(draw(st.dictionaries(short_text, json_values, max_size=2)))
        return frame

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        if draw(st.sampled_from([True, True, True, True, False])):
            frame = draw(plausible_frame())
        else:
            frame = draw(protocol_frames(room_values=real_rooms))
        # The gateway's own keys on top, as protocol.bus_request puts them.
        for key in ("session_data", "request_id", "reply_to", "send_to"):
            frame.pop(key, None)
        frame["session_data"] = draw(sessions(world))
        frame["request_id"] = REQUEST_ID
        frame["reply_to"] = REPLY_TO
        # What a worker gets has been through JSON.
        return json.loads(json.dumps(frame, allow_nan=False))

    return build()


def assert_one_envelope(outgoing: Outgoing, request: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(outgoing, Outgoing)
    envelope = outgoing.envelope
    # What the worker publishes must survive Redis (UTF-8) and the gateway's strict reading.
    assert assert_wire_safe(outgoing.encode().decode("utf-8"))  # strict: valid UTF-8 == envelope
    assert envelope["type"] in ("success_response", "error_response")
    assert envelope["request_id"] == REQUEST_ID
    response = envelope["response"]
    # uuid and action come back as the request had them when they are strings, null otherwise.
    for key in ("uuid", "action"):
        assert response[key] == (request.get(key) if isinstance(request.get(key), str) else None)
    if envelope["type"] == "error_response":
        assert response["status"] == "error"
        assert response["error_code"] in ERROR_CODES
        assert response["error_code"] != "server_error", (response, request)
        assert isinstance(response["error_message"], str) and response["error_message"]
        assert_error(outgoing, request, response["error_code"])
        return response
    assert response["status"] == "success"
    assert isinstance(request["uuid"], str) and 1 <= len(request["uuid"]) <= 64
    assert request["action"] in registry
    send_to = envelope["send_to"]
    assert send_to is None or (isinstance(send_to, list) and all(type(pk) is int for pk in send_to))
    assert outgoing.topic == (REPLY_TO if send_to is None else RESPONSE_TOPIC)
    assert envelope["session_data"] is None or (
        request["action"] == "authenticate" and type(envelope["session_data"]["user_pk"]) is int)
    return response


@pytest.mark.parametrize("action", sorted(declared.name for declared in registry))
def test_any_request_to_any_handler_gets_one_envelope_and_never_server_error(world, action):
    @FUZZ_SETTINGS
    @given(request=requests(world, action))
    def run(request):
        response = assert_one_envelope(dispatch.handle(request, RESPONSE_TOPIC, everyone_online), request)
        event(response.get("error_code", "success"))

    run()


@FUZZ_SETTINGS
@given(raw=st.one_of(json_values.map(lambda value: json.dumps(value, allow_nan=False)), st.text(), st.binary()))
def test_any_raw_bus_payload_is_answered_or_dropped(raw, connection_checks):
    # process() drops what has no reply_to/request_id (no one to answer), and answers the rest.
    try:
        outgoing = dispatch.process(raw, RESPONSE_TOPIC, everyone_online)
    except Exception as exc:  # pragma: no cover - the assertion says what
        raise AssertionError(f"process() raised {exc!r}") from exc
    assert outgoing is None


# -- the defects the fuzzing found, as plain unit tests ---------------------------------------------


@pytest.mark.parametrize("raw", ["[" * 100_000, '{"a":' * 100_000])
def test_a_bus_payload_nested_past_the_parser_is_dropped_not_raised(raw):
    # The gateway never publishes one (it refuses frames nested deeper than 16); a payload from
    # anywhere else must not escape process() either.
    assert dispatch.process(raw, RESPONSE_TOPIC) is None


@pytest.mark.parametrize("action, key", [("load_history", "before"), ("sync", "after"), ("mark_read", "message")])
@pytest.mark.parametrize("value", [2 ** 63, 10 ** 30])
def test_a_message_id_beyond_64_bits_is_answered(alice, room, action, key, value):
    # Not a defect: Django turns an out-of-range integer lookup into an empty result.
    request = bus_request(action, user=alice, room=room.pk.hex, **{key: value})
    assert send(request).envelope["response"]["status"] == "success"


@pytest.mark.parametrize("user_pk", [2 ** 63, -(2 ** 63) - 1, 10 ** 30])
def test_session_with_a_user_pk_beyond_64_bits_is_no_user(alice, user_pk):
    request = bus_request("list_rooms")
    request["session_data"] = {"user_pk": user_pk}
    assert_error(send(request), request, "authentication_required")


def test_session_with_user_pk_true_is_no_user(db):
    # True == 1 in Python: this was the session of user 1.
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    users.filter(pk=1).first() or users.create_user(username="one", id=1)
    request = bus_request("list_rooms")
    request["session_data"] = {"user_pk": True}
    assert_error(send(request), request, "authentication_required")


@pytest.mark.parametrize("action, key, code", [
    ("new_message", "text", "invalid_message_format"),
    ("direct_message", "text", "invalid_message_format"),
    ("create_room", "name", "invalid_message_format"),
    ("create_room", "members", "invalid_user"),
    ("add_members", "members", "invalid_user"),
    ("direct_message", "to", "invalid_user"),
    ("authenticate", "token", "invalid_token"),
])
@pytest.mark.parametrize("bad", ["x\ud800y", "x\x00y"], ids=["lone-surrogate", "nul"])
def test_strings_the_database_cannot_hold_are_refused(alice, bob, room, action, key, code, bad):
    # A lone surrogate (sent as a "\ud800" escape) cannot be encoded for SQLite or PostgreSQL, and
    # PostgreSQL refuses NUL in text: both were server_error.
    fields_ = {"room": room.pk.hex, "text": "hi", "name": "n", "members": ["bob"], "to": "bob", "token": "t"}
    fields_[key] = [bad] if key == "members" else bad
    request = bus_request(action, user=alice, **fields_)
    assert_error(send(request), request, code)


@pytest.mark.parametrize("action", ["new_message", "direct_message"])
@pytest.mark.parametrize("bad", ["\ud800", "a\x00"], ids=["lone-surrogate", "nul"])
def test_a_uuid_the_database_cannot_hold_is_refused_for_a_stored_message(alice, bob, room, action, bad):
    request = bus_request(action, user=alice, room=room.pk.hex, to="bob", text="hi", uuid=bad)
    response = assert_error(send(request), request, "invalid_message_format")
    assert response["uuid"] == bad
    assert not ChatMessage.objects.exists()


def test_a_reply_echoing_a_lone_surrogate_is_still_valid_utf8(alice):
    request = bus_request("list_rooms", user=alice, uuid="\udfff")
    outgoing = send(request)
    outgoing.encode().decode("utf-8")  # strict: what Redis carries is valid UTF-8
    assert json.loads(outgoing.encode())["response"]["uuid"] == "\udfff"


def test_fields_storable_text():
    assert fields.storable("é\U0001f600 ok")
    assert not fields.storable("\ud800")
    assert not fields.storable("a\x00")
