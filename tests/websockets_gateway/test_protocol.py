"""The client side of the wire protocol: parsing and checking frames, building replies and bus requests."""

from __future__ import annotations

import json

import pytest

from websockets_gateway import protocol
from websockets_gateway.protocol import FrameRejected, bus_request, check_frame, error_reply, parse_frame, ping_reply


# parse_frame

@pytest.mark.parametrize("text", ["not json", "{", "", "{'single': 'quotes'}"])
def test_parse_frame_rejects_non_json(text):
    with pytest.raises(FrameRejected, match="not JSON"):
        parse_frame(text)


@pytest.mark.parametrize("text", ["[]", '[{"uuid": "u"}]', "42", "1.5", '"a string"', "null", "true"])
def test_parse_frame_rejects_json_that_is_not_an_object(text):
    with pytest.raises(FrameRejected, match="not a JSON object"):
        parse_frame(text)


def test_parse_frame_returns_an_object():
    assert parse_frame('{"uuid": "u1", "action": "ping", "extra": [1, 2]}') == {
        "uuid": "u1", "action": "ping", "extra": [1, 2]}


def test_parse_frame_accepts_an_empty_object():
    # Shape errors are check_frame's business (an error reply), not a transport error (a close).
    assert parse_frame("{}") == {}


# check_frame

def _assert_error(reply, code):
    assert reply is not None, "expected an error reply"
    assert reply["status"] == "error"
    assert reply["error_code"] == code
    assert isinstance(reply["error_message"], str) and reply["error_message"]


@pytest.mark.parametrize(
    "frame",
    [
        {"action": "ping"},
        {"uuid": "", "action": "ping"},
        {"uuid": "x" * 65, "action": "ping"},
        {"uuid": 12, "action": "ping"},
        {"uuid": None, "action": "ping"},
        {"uuid": ["u"], "action": "ping"},
    ],
    ids=["missing", "empty", "65-chars", "int", "null", "list"],
)
def test_check_frame_rejects_a_bad_uuid(frame):
    _assert_error(check_frame(frame, authenticated=True), "invalid_message_format")


def test_check_frame_accepts_uuid_of_1_and_64_characters():
    assert check_frame({"uuid": "u", "action": "ping"}, authenticated=False) is None
    assert check_frame({"uuid": "x" * 64, "action": "ping"}, authenticated=False) is None


@pytest.mark.parametrize(
    "frame",
    [
        {"uuid": "u1"},
        {"uuid": "u1", "action": ""},
        {"uuid": "u1", "action": 3},
        {"uuid": "u1", "action": None},
        {"uuid": "u1", "action": {"name": "ping"}},
    ],
    ids=["missing", "empty", "int", "null", "object"],
)
def test_check_frame_rejects_a_bad_action(frame):
    _assert_error(check_frame(frame, authenticated=True), "invalid_message_format")


# The gateway knows no domain action: it forwards any, and a worker answers an unknown one
# invalid_action (tests/workers/test_dispatch.py).
PROTOCOL_ACTIONS = ("select_room", "new_message", "list_rooms", "create_room", "add_members", "leave_room",
                    "direct_message", "load_history", "mark_read", "typing", "who_is_online", "sync")


@pytest.mark.parametrize("action", PROTOCOL_ACTIONS + ("drop_tables", "a" * 10_000))
def test_check_frame_requires_authentication_for_other_actions(action):
    reply = check_frame({"uuid": "u1", "action": action, "room": "r1"}, authenticated=False)
    _assert_error(reply, "authentication_required")
    assert (reply["uuid"], reply["action"], reply["room"]) == ("u1", action, "r1")


@pytest.mark.parametrize("action", PROTOCOL_ACTIONS + ("authenticate", "ping", "drop_tables", "a" * 10_000))
def test_check_frame_lets_every_action_through_once_authenticated(action):
    assert check_frame({"uuid": "u1", "action": action}, authenticated=True) is None


@pytest.mark.parametrize("action", ["authenticate", "ping"])
def test_check_frame_allows_authenticate_and_ping_anonymously(action):
    assert check_frame({"uuid": "u1", "action": action}, authenticated=False) is None


def test_anonymous_actions_are_exactly_authenticate_and_ping():
    assert protocol.ANONYMOUS_ACTIONS == {"authenticate", "ping"}


def test_check_frame_uuid_error_wins_over_unknown_action():
    _assert_error(check_frame({"action": "nope"}, authenticated=False), "invalid_message_format")


# error_reply

def test_error_reply_echoes_uuid_action_and_room():
    frame = {"uuid": "u1", "action": "new_message", "room": "abc", "text": "hi"}
    assert error_reply(frame, "invalid_room_id", "Invalid room id") == {
        "uuid": "u1",
        "action": "new_message",
        "room": "abc",
        "status": "error",
        "error_code": "invalid_room_id",
        "error_message": "Invalid room id",
    }


def test_error_reply_leaves_out_room_when_the_frame_has_none():
    reply = error_reply({"uuid": "u1", "action": "list_rooms"}, "server_error", "Server error")
    assert "room" not in reply
    assert reply["uuid"] == "u1"


def test_error_reply_echoes_only_string_values():
    frame = {"uuid": 7, "action": ["ping"], "room": {"id": 1}}
    reply = error_reply(frame, "invalid_message_format", "bad")
    assert reply["uuid"] is None
    assert reply["action"] is None
    assert "room" not in reply
    assert reply["error_code"] == "invalid_message_format"


def test_error_reply_for_an_empty_frame_has_null_uuid_and_action():
    reply = error_reply({}, "invalid_message_format", "bad")
    assert reply["uuid"] is None and reply["action"] is None
    assert reply["status"] == "error"


def test_error_reply_status_cannot_be_overridden_by_the_frame():
    reply = error_reply({"uuid": "u", "action": "ping", "status": "success", "error_code": "x"}, "timeout", "t")
    assert reply["status"] == "error"
    assert reply["error_code"] == "timeout"


# ping_reply

def test_ping_reply():
    assert ping_reply({"uuid": "p1", "action": "ping"}, connections=3, now=1763766000.5) == {
        "uuid": "p1",
        "action": "ping",
        "status": "success",
        "server_time": 1763766000.5,
        "connections": 3,
    }


def test_ping_reply_uses_the_current_time_by_default(monkeypatch):
    monkeypatch.setattr(protocol.time, "time", lambda: 123.25)
    assert ping_reply({"uuid": "p1", "action": "ping"}, connections=0)["server_time"] == 123.25


# bus_request

def test_bus_request_replaces_the_clients_gateway_keys_with_the_gateways():
    frame = {
        "uuid": "u1",
        "action": "authenticate",
        "token": "t0k",
        "session_data": {"user_pk": 999},
        "request_id": "other-gw:1",
        "reply_to": "attacker_topic",
        "send_to": [1, 2, 3],
    }
    request = bus_request(frame, {"user_pk": 42}, "gw-1:7", "gateway_reply:gw-1")
    assert request == {
        "uuid": "u1",
        "action": "authenticate",
        "token": "t0k",
        "session_data": {"user_pk": 42},
        "request_id": "gw-1:7",
        "reply_to": "gateway_reply:gw-1",
    }


def test_bus_request_sends_empty_session_data_for_an_anonymous_connection():
    request = bus_request({"uuid": "u1", "action": "authenticate", "session_data": {"user_pk": 1}}, {}, "gw:1", "r")
    assert request["session_data"] == {}


def test_bus_request_copies_session_data_and_leaves_the_frame_alone():
    session = {"user_pk": 5}
    frame = {"uuid": "u1", "action": "ping", "send_to": [1]}
    request = bus_request(frame, session, "gw:1", "r")
    request["session_data"]["user_pk"] = 6
    assert session == {"user_pk": 5}
    assert frame == {"uuid": "u1", "action": "ping", "send_to": [1]}


# encode

def test_encode_is_compact_json_and_keeps_unicode():
    text = protocol.encode({"text": "héllo ✓", "n": 1})
    assert text == '{"text":"héllo ✓","n":1}'
    assert json.loads(text) == {"text": "héllo ✓", "n": 1}
