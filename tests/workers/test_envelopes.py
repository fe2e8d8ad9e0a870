"""`workers.envelopes`: the reply and envelope shapes of the protocol's bus section."""

from __future__ import annotations

import json

import pytest

from websockets_gateway import wire
from workers import envelopes
from workers.envelopes import HandlerResult

REQUEST = {"uuid": "u-1", "action": "select_room", "room": "ab" * 16, "request_id": "gw:7", "reply_to": "gw",
           "session_data": {"user_pk": 3}, "extra": "ignored"}


# The reply's shape is the wire's, shared with the gateway (websockets_gateway.wire).

def test_reply_head_echoes_uuid_action_and_a_string_room():
    assert wire.reply_head(REQUEST) == {"uuid": "u-1", "action": "select_room", "room": "ab" * 16}


def test_reply_head_leaves_out_a_missing_or_non_string_room():
    assert wire.reply_head({"uuid": "u", "action": "a"}) == {"uuid": "u", "action": "a"}
    assert wire.reply_head({"uuid": "u", "action": "a", "room": 5}) == {"uuid": "u", "action": "a"}


def test_success_reply():
    assert wire.success_reply(REQUEST, room_messages=[]) == {
        "uuid": "u-1", "action": "select_room", "room": "ab" * 16, "status": "success", "room_messages": []}


def test_error_reply():
    assert wire.error_reply({"uuid": "u", "action": "new_message"}, "empty_text", "Message text is empty") == {
        "uuid": "u", "action": "new_message", "status": "error",
        "error_code": "empty_text", "error_message": "Message text is empty"}


def test_success_envelope():
    result = HandlerResult({"status": "success"}, send_to=[1, 2], session_data={"user_pk": 1})
    assert envelopes.envelope(REQUEST, result) == {
        "type": "success_response", "request_id": "gw:7", "send_to": [1, 2],
        "session_data": {"user_pk": 1}, "response": {"status": "success"}}


def test_success_envelope_defaults_to_the_requester_alone_and_no_session_change():
    enveloped = envelopes.envelope(REQUEST, HandlerResult({"status": "success"}))
    assert enveloped["send_to"] is None
    assert enveloped["session_data"] is None


def test_error_envelope():
    assert envelopes.error_envelope(REQUEST, "invalid_room_id", "Invalid room id") == {
        "type": "error_response", "request_id": "gw:7", "send_to": None, "session_data": None,
        "response": {"uuid": "u-1", "action": "select_room", "room": "ab" * 16, "status": "error",
                     "error_code": "invalid_room_id", "error_message": "Invalid room id"}}


def test_encode_is_compact_utf8_json():
    built = {"response": {"text": "héllo ✓", "n": [1, 2.5, None, True]}}
    encoded = envelopes.encode(built)
    assert encoded == '{"response":{"text":"héllo ✓","n":[1,2.5,null,true]}}'.encode()
    assert json.loads(encoded) == built


def test_encode_takes_what_orjson_refuses_through_json():
    # An integer beyond 64 bits and a lone surrogate (a client's, echoed): the same values read back,
    # the surrogate as a JSON escape (UTF-8 cannot carry it).
    built = {"request_id": "r", "response": {"uuid": "\udfff", "before": 2**70}}
    encoded = envelopes.encode(built)
    assert encoded.isascii() and b"\\udfff" in encoded
    assert json.loads(encoded) == built
    big = {"response": {"before": 2**70, "text": "héllo"}}
    assert envelopes.encode(big) == '{"response":{"before":1180591620717411303424,"text":"héllo"}}'.encode()


def test_a_success_reply_keeps_its_own_keys():
    # An action's fields cannot hide that the reply is a success, nor what it answers.
    for key in ("status", "uuid", "action"):
        with pytest.raises(ValueError):
            wire.success_reply(REQUEST, **{key: "x"})
    assert wire.success_reply(REQUEST, room={"id": "r"})["room"] == {"id": "r"}
