"""Hostile input into the gateway's frame checks: any text a client may send ends in exactly one
well-formed reply, or in the documented rejection (FrameRejected: close 1003), never in an
exception the `/ws` handler does not expect.

The strategies here are shared with the workers' fuzz tests (`tests/workers/test_dispatch_fuzz.py`).
"""

from __future__ import annotations

import json
import uuid as uuidlib
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from websockets_gateway import protocol
from websockets_gateway.protocol import (
    FrameRejected,
    bus_request,
    check_frame,
    encode,
    encode_frame,
    encode_payload,
    parse_frame,
    ping_reply,
)

FUZZ_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The keys of the protocol's frames; a hostile frame is mostly these, with values of every type.
PROTOCOL_KEYS = ("uuid", "action", "room", "text", "token", "members", "to", "before", "after", "limit",
                 "message", "name")
# What the gateway adds on the bus: a client that sends them must not get them through.
GATEWAY_KEYS = ("session_data", "request_id", "reply_to", "send_to")
# The protocol's actions (the workers' registry; the gateway knows only `ping` and `authenticate`).
ACTIONS = ("authenticate", "select_room", "new_message", "list_rooms", "create_room", "add_members", "leave_room",
           "direct_message", "load_history", "mark_read", "typing", "who_is_online", "sync", "ping")
ERROR_CODES = frozenset({
    "invalid_message_format", "invalid_action", "invalid_token", "authentication_required", "invalid_room_id",
    "empty_text", "text_too_long", "invalid_user", "forbidden", "rate_limited", "timeout", "server_error",
    "invalid_message_id", "message_deleted", "invalid_emoji", "cursor_expired",
})

# -- strategies -------------------------------------------------------------------------------------

# Lone surrogates: legal in a JSON string escape (\ud800), not encodable as UTF-8.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_char = st.one_of(st.characters(), surrogates, st.sampled_from("\x00\n\t \u200b\ufeff\U0001f600"))
short_text = st.text(any_char, max_size=20)
# Text with a lone surrogate in it for sure: what a client gets by sending "\ud800" as an escape.
broken_text = st.builds(lambda before, surrogate, after: before + surrogate + after, short_text, surrogates,
                        short_text)


def _repeat(piece: str, times: int) -> str:
    return (piece or "x") * times


# Strings around every bound the protocol names: 64 (uuid), 128 (token), 150 (username),
# 200 (room name), 4000 (text), and far beyond.
long_text = st.builds(_repeat, st.text(any_char, min_size=1, max_size=3),
                      st.sampled_from([63, 64, 65, 128, 129, 150, 151, 200, 201, 2000, 4000, 4001, 20000]))
room_ids = st.one_of(
    st.uuids().map(lambda value: value.hex),
    st.uuids().map(str),
    st.uuids().map(lambda value: value.hex.upper()),
    st.uuids().map(lambda value: "{" + value.hex + "}"),
    st.text("0123456789abcdef-", min_size=32, max_size=36),
    st.sampled_from(["0" * 32, "f" * 32, "+" + "0" * 31, "-" + "0" * 31, " " + "0" * 31, "0" * 30 + "_0",
                     "urn:uuid:" + "0" * 27, "g" * 32, "٠" * 32]),
)
huge_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64, -(2 ** 63), -(2 ** 63) - 1, 10 ** 100,
                     -(10 ** 100)]),
)
# JSON has no NaN or Infinity: those are text-level cases (test_nan_and_infinity_are_not_json).
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0, 1.0, 1.5, 1e308]))
scalars = st.one_of(st.none(), st.booleans(), huge_ints, floats, short_text, broken_text, long_text, room_ids)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(short_text, children, max_size=4)),
    max_leaves=12,
)
uuids = st.one_of(
    st.uuids().map(lambda value: value.hex),
    st.text(any_char, min_size=1, max_size=64),
    st.sampled_from(["", "x" * 64, "x" * 65, " ", "\x00"]),
    json_values,
)
actions = st.one_of(st.sampled_from(ACTIONS), st.sampled_from(ACTIONS),
                    st.sampled_from(["", "PING", "ping ", "__class__", "server_error", "authenticate\x00"]),
                    json_values)
usernames = st.one_of(st.sampled_from(["alice", "bob", "carol", "nobody", "", " alice"]), short_text, broken_text,
                      long_text)
# The values each key most often gets: the right type with odd content, then anything at all.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "uuid": uuids,
    "action": actions,
    "room": st.one_of(room_ids, json_values),
    "text": st.one_of(short_text, broken_text, long_text, st.sampled_from(["", " ", "\n\t", "hi"]), json_values),
    "token": st.one_of(short_text, broken_text, long_text, json_values),
    "members": st.one_of(st.lists(usernames, max_size=6), json_values,
                         st.builds(lambda n: ["alice"] * n, st.sampled_from([500, 501]))),
    "to": st.one_of(usernames, json_values),
    "before": st.one_of(huge_ints, json_values),
    "after": st.one_of(huge_ints, json_values),
    "limit": st.one_of(huge_ints, st.sampled_from([1, 20, 100, 101, 500, 501]), json_values),
    "message": st.one_of(huge_ints, json_values),
    "name": st.one_of(short_text, broken_text, long_text, json_values),
}


# True 8 times in 10 (st.integers would lean to its bounds).
mostly = st.sampled_from([True] * 8 + [False] * 2)


@st.composite
def protocol_frames(draw: st.DrawFn, room_values: st.SearchStrategy[Any] | None = None,
                    include_gateway_keys: bool = True) -> dict[str, Any]:
    """A JSON object biased towards the protocol: a subset of its keys with hostile values, a few more."""
    values = dict(FIELD_VALUES)
    if room_values is not None:
        values["room"] = st.one_of(room_values, room_values, values["room"])
    keys = draw(st.lists(st.sampled_from(PROTOCOL_KEYS), unique=True, max_size=len(PROTOCOL_KEYS)))
    # uuid and action most of the time, so that most frames get past the first check.
    for key in ("uuid", "action"):
        if key not in keys and draw(mostly):
            keys.append(key)
    frame = {key: draw(values[key]) for key in keys}
    if include_gateway_keys and not draw(mostly):
        frame[draw(st.sampled_from(GATEWAY_KEYS))] = draw(json_values)
    frame.update(draw(st.dictionaries(short_text, json_values, max_size=2)))
    return frame


frames = st.one_of(protocol_frames(), st.dictionaries(short_text, json_values, max_size=6))

# -- what a well-formed reply is --------------------------------------------------------------------


def assert_wire_safe(text: str) -> Any:
    """What the gateway writes (to a socket or to Redis) is UTF-8 encodable, strict JSON."""
    text.encode("utf-8")

    def no_constants(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constants)


def assert_reply(frame: dict[str, Any], text: str) -> dict[str, Any]:
    reply = assert_wire_safe(text)
    assert isinstance(reply, dict)
    assert reply["status"] in ("success", "error")
    # uuid and action come back as the frame had them when they are strings, null otherwise.
    for key in ("uuid", "action"):
        assert reply[key] == (frame.get(key) if isinstance(frame.get(key), str) else None)
    if reply["status"] == "error":
        assert reply["error_code"] in ERROR_CODES
        assert isinstance(reply["error_message"], str) and reply["error_message"]
        if isinstance(frame.get("room"), str):
            assert reply["room"] == frame["room"]
        else:
            assert "room" not in reply
    return reply


def gateway_outcome(text: str, authenticated: bool) -> tuple[str, Any]:
    """What `views._handle_text` does with one text frame, without a socket: ("close", reason),
    ("reply", reply text) or ("forward", bus payload as bus.publish_request encodes it)."""
    try:
        frame = parse_frame(text)
    except FrameRejected as exc:
        return "close", str(exc)
    error = check_frame(frame, authenticated=authenticated)
    if error is not None:
        return "reply", encode(error)
    if frame["action"] == "ping":
        return "reply", encode(ping_reply(frame, connections=3))
    request = bus_request(frame, {"user_pk": 7} if authenticated else {}, "gw-1:1", "gw-1-replies")
    # bus.publish_request publishes these UTF-8 bytes.
    return "forward", encode_payload(request).decode("utf-8")


def assert_one_outcome(frame: dict[str, Any], text: str, authenticated: bool) -> None:
    kind, result = gateway_outcome(text, authenticated)
    # A JSON object is never closed on: it is answered or forwarded.
    assert kind != "close", result
    if kind == "reply":
        reply = assert_reply(frame, result)
        if reply["status"] == "success":
            assert reply["action"] == "ping"
        return
    # Forwarded: the worker will answer it, and it must survive the trip through Redis.
    request = assert_wire_safe(result)
    assert isinstance(frame["uuid"], str) and 1 <= len(frame["uuid"]) <= 64
    # Any action but the gateway's own: an unknown one is the worker's to refuse (invalid_action).
    assert isinstance(frame["action"], str) and frame["action"] and frame["action"] != "ping"
    assert authenticated or frame["action"] == "authenticate"
    assert request["session_data"] == ({"user_pk": 7} if authenticated else {})
    assert (request["request_id"], request["reply_to"]) == ("gw-1:1", "gw-1-replies")
    assert "send_to" not in request


# -- properties -------------------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(frame=frames, authenticated=st.booleans(), ascii_only=st.booleans())
def test_any_json_object_gets_one_reply_or_is_forwarded(frame, authenticated, ascii_only):
    # Frames are sent both with and without \u escapes, as clients differ.
    text = json.dumps(frame, ensure_ascii=ascii_only, allow_nan=False)
    if not ascii_only:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate cannot be sent raw in a text frame (aiohttp decodes UTF-8 strictly).
            text = json.dumps(frame, allow_nan=False)
    assert_one_outcome(frame, text, authenticated)


@FUZZ_SETTINGS
@given(value=json_values)
def test_any_json_value_but_an_object_closes_the_connection(value):
    kind, reason = gateway_outcome(json.dumps(value, allow_nan=False), authenticated=True)
    if isinstance(value, dict):
        assert kind != "close"
    else:
        assert (kind, reason) == ("close", "Frame is not a JSON object")


@FUZZ_SETTINGS
@given(text=st.one_of(st.text(), st.text("{}[]\":,0123456789.eE+-truefalsnul \\", max_size=40),
                      st.binary(max_size=40).map(lambda raw: raw.decode("latin-1"))),
       authenticated=st.booleans())
def test_any_text_is_a_reply_a_forward_or_a_close(text, authenticated):
    kind, result = gateway_outcome(text, authenticated)
    if kind == "close":
        assert result in ("Frame is not JSON", "Frame is not a JSON object")
    else:
        assert_wire_safe(result)


@FUZZ_SETTINGS
@given(frame=frames, code=st.sampled_from(sorted(ERROR_CODES)), message=st.text(min_size=1))
def test_error_reply_to_any_frame_is_well_formed(frame, code, message):
    # The gateway builds these for rate_limited, timeout and in-flight overflow, whatever the frame.
    reply = assert_reply(frame, encode(protocol.error_reply(frame, code, message)))
    assert (reply["status"], reply["error_code"]) == ("error", code)


# -- the defects these properties found, as plain unit tests ----------------------------------------


@pytest.mark.parametrize("depth", [1000, 10_000, 30_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_past_the_parsers_limit_is_rejected_not_raised(depth, opener):
    # json.loads raises RecursionError (not ValueError) past the interpreter's recursion limit,
    # and a 64 KiB frame nests 30,000 deep: that escaped the /ws handler.
    closer = "]" if opener == "[" else "}"
    text = '{"uuid":"u1","action":"sync","after":' + opener * depth + "1" + closer * depth + "}"
    with pytest.raises(FrameRejected, match="not JSON"):
        parse_frame(text)


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_a_frame_nested_deeper_than_the_bound_is_refused_before_the_bus(opener):
    # Below the parser's limit but deep enough that json.dumps on the bus, or the worker's
    # json.loads a few stack frames further in, could still hit the recursion limit.
    closer = "]" if opener == "[" else "}"

    def frame_text(depth: int) -> str:  # the whole frame nests `depth` levels
        inner = depth - 1
        return '{"uuid":"u1","action":"sync","x":' + opener * inner + "1" + closer * inner + "}"

    assert gateway_outcome(frame_text(protocol.MAX_FRAME_DEPTH), authenticated=True)[0] == "forward"
    for depth in (protocol.MAX_FRAME_DEPTH + 1, 900):
        frame = parse_frame(frame_text(depth))
        reply = check_frame(frame, authenticated=True)
        assert reply is not None and reply["error_code"] == "invalid_message_format"
        assert reply["uuid"] == "u1" and "nests" in reply["error_message"]


@pytest.mark.parametrize("text", ['{"uuid": "u1", "action": "ping", "x": NaN}',
                                  '{"uuid": "u1", "action": "sync", "after": Infinity}',
                                  '{"uuid": "u1", "action": "sync", "after": -Infinity}',
                                  '{"uuid": "u1", "action": "sync", "after": 1e400}'])
def test_nan_and_infinity_are_not_json(text):
    # json.loads takes them by default; forwarded, they made the bus payload non-JSON.
    with pytest.raises(FrameRejected, match="not JSON"):
        parse_frame(text)


@pytest.mark.parametrize("field", ["uuid", "text", "room", "token", "name", "a key", "nested"])
def test_a_lone_surrogate_is_refused_and_echoed_safely(field):
    # Forwarded, it made bus.publish_request raise UnicodeEncodeError (Redis encodes UTF-8): the
    # /ws handler died, the connection dropped without a close frame, its requests unanswered.
    frame = {"uuid": "u1", "action": "new_message", "room": uuidlib.uuid4().hex, "text": "hi"}
    if field == "a key":
        frame["x\ud800"] = 1
    elif field == "nested":
        frame["extra"] = [{"deep": ["\udbff"]}]
    else:
        frame[field] = "x\udc00y" if field != "uuid" else "\udfff"
    text = json.dumps(frame)  # \udfff escapes: valid JSON syntax, not valid Unicode
    kind, result = gateway_outcome(text, authenticated=True)
    assert kind == "reply"
    reply = assert_reply(frame, result)
    assert reply["error_code"] == "invalid_message_format"
    assert reply["uuid"] == frame["uuid"]  # echoed exactly, as an escape


def test_a_valid_surrogate_pair_is_an_ordinary_character():
    frame = parse_frame('{"uuid": "\\ud83d\\ude00", "action": "new_message", "room": "' + "0" * 32
                        + '", "text": "\\ud83d\\ude00"}')
    assert frame["text"] == "\U0001f600"
    assert check_frame(frame, authenticated=True) is None


def test_ping_with_a_lone_surrogate_uuid_is_refused_with_its_uuid():
    frame = parse_frame('{"uuid": "\\ud800", "action": "ping"}')
    reply = assert_wire_safe(encode(check_frame(frame, authenticated=False)))
    assert (reply["uuid"], reply["error_code"]) == ("\ud800", "invalid_message_format")


def test_encode_keeps_non_ascii_raw_when_it_can():
    assert encode({"text": "é\U0001f600"}) == '{"text":"é\U0001f600"}'
    assert encode({"text": "\ud800"}) == '{"text":"\\ud800"}'


# -- orjson on the hot path, json as the reference ---------------------------------------------------
# parse_frame, loads and encode_frame read and write with orjson, falling back to json wherever
# orjson refuses a document or could read it differently. These hold them to json's outcome.


def _reference_parse(text: str) -> tuple[str, Any]:
    """parse_frame as it was, on json alone: ("frame", value) or ("close", reason)."""
    def not_json(constant: str) -> Any:
        raise ValueError(constant)

    def finite(literal: str) -> float:
        number = float(literal)
        if number in (float("inf"), float("-inf")):
            raise ValueError(literal)
        return number

    try:
        frame = json.loads(text, parse_constant=not_json, parse_float=finite)
    except (ValueError, RecursionError):
        return "close", "Frame is not JSON"
    if not isinstance(frame, dict):
        return "close", "Frame is not a JSON object"
    return "frame", frame


def _parsed(text: str) -> tuple[str, Any]:
    try:
        return "frame", parse_frame(text)
    except FrameRejected as exc:
        return "close", str(exc)


def assert_same(left: Any, right: Any) -> None:
    """Equal values of the same types: an int is not a float, -0.0 is not 0.0, key order counts."""
    assert type(left) is type(right), (left, right)
    if isinstance(left, float):
        assert repr(left) == repr(right)
    elif isinstance(left, dict):
        assert list(left) == list(right)
        for key in left:
            assert_same(left[key], right[key])
    elif isinstance(left, list):
        assert len(left) == len(right)
        for a, b in zip(left, right):
            assert_same(a, b)
    else:
        assert left == right


def assert_parses_as_json_does(text: str) -> None:
    expected, got = _reference_parse(text), _parsed(text)
    assert expected[0] == got[0], (text, expected, got)
    if expected[0] == "close":
        assert got == expected
    else:
        assert_same(got[1], expected[1])


# Number literals of every shape: integers past 64 bits (orjson would read them as floats),
# long mantissas, exponents past the range of a double (1e400: json's hook refuses it).
number_literals = st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)


@FUZZ_SETTINGS
@given(value=json_values, ascii_only=st.booleans())
def test_parse_frame_reads_any_document_as_json_does(value, ascii_only):
    text = json.dumps({"uuid": "u1", "action": "sync", "x": value}, ensure_ascii=ascii_only, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps({"uuid": "u1", "action": "sync", "x": value}, allow_nan=False)
    assert_parses_as_json_does(text)
    assert_parses_as_json_does(json.dumps(value, allow_nan=False))


@FUZZ_SETTINGS
@given(literal=number_literals, nested=st.booleans())
def test_parse_frame_reads_any_number_as_json_does(literal, nested):
    inner = f"[{literal}]" if nested else literal
    assert_parses_as_json_does('{"uuid":"u1","action":"load_history","before":' + inner + "}")


@FUZZ_SETTINGS
@given(text=st.one_of(st.text("{}[]\":,0123456789.eE+-truefalsnul \\u", max_size=60),
                      st.text(any_char, max_size=40).map(lambda raw: '{"a":"' + raw + '"}')))
def test_parse_frame_reads_any_text_as_json_does(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass  # aiohttp never hands such a str over (it decodes UTF-8 strictly); still one outcome
    assert_parses_as_json_does(text)


@FUZZ_SETTINGS
@given(value=st.one_of(json_values, st.recursive(st.one_of(huge_ints, floats, st.text("0123456789.e-", max_size=30)),
                                                   lambda children: st.lists(children, max_size=3), max_leaves=6)))
def test_loads_reads_a_worker_envelope_as_json_does(value):
    for text in (json.dumps({"response": value}), json.dumps({"response": value}, ensure_ascii=False)):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            continue  # a raw lone surrogate: not something Redis hands over
        assert_same(protocol.loads(data), json.loads(data))


def joined_surrogate_pairs(value: Any) -> Any:
    """The value with each high surrogate followed by a low one read as the one character they
    encode, in every string: what any JSON reader makes of the pair once written as escapes.

    Such a pair never comes from a parsed frame (the parser joins "\\ud800\\udc00" already), so
    only a drawn value holds one; lone surrogates stay as they are.
    """
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [joined_surrogate_pairs(item) for item in value]
    if isinstance(value, dict):
        return {joined_surrogate_pairs(key): joined_surrogate_pairs(item) for key, item in value.items()}
    return value


@FUZZ_SETTINGS
@given(value=json_values)
@example(value="\ud800\udc00")
@example(value={"\udbff\udfff": ["\ud800", "\udc00\ud800"]})
def test_encode_frame_writes_what_json_reads_back_exactly(value):
    reply = {"uuid": "u1", "status": "success", "value": value}
    payload = encode_frame(reply)
    assert isinstance(payload, bytes)
    assert_same(json.loads(payload.decode("utf-8")), joined_surrogate_pairs(reply))


def test_a_surrogate_pair_is_read_back_as_the_character_it_encodes():
    assert json.loads(encode_frame({"value": "\ud800\udc00"}))["value"] == "\U00010000"
    assert json.loads(encode_frame({"value": "\udc00\ud800"}))["value"] == "\udc00\ud800"


@pytest.mark.parametrize("number", [2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64, 2 ** 70, 10 ** 100,
                                    -(2 ** 63), -(2 ** 63) - 1, -(10 ** 100)])
def test_integers_past_64_bits_stay_exact_integers(number):
    # orjson reads 2**64 as the float 1.8446744073709552e19 and refuses to write it: json does both.
    text = '{"uuid":"u1","action":"load_history","room":"' + "0" * 32 + f'","before":{number}}}'
    frame = parse_frame(text)
    assert type(frame["before"]) is int and frame["before"] == number
    kind, payload = gateway_outcome(text, authenticated=True)
    assert kind == "forward" and json.loads(payload)["before"] == number
    assert f'"before":{number}' in payload
    reply = encode_frame({"uuid": "u1", "status": "success", "message": number})
    assert json.loads(reply)["message"] == number
    envelope = protocol.loads(b'{"response":{"n":' + str(number).encode() + b"}}")
    assert type(envelope["response"]["n"]) is int and envelope["response"]["n"] == number


@pytest.mark.parametrize("depth", [50, 899, 900, 990, 1020, 1030])
def test_loads_gets_json_s_verdict_on_deep_nesting(depth):
    data = ("[" * depth + "]" * depth).encode()
    try:
        expected = ("value", json.loads(data))
    except RecursionError:
        expected = ("raises", RecursionError)
    try:
        got = ("value", protocol.loads(data))
    except RecursionError:
        got = ("raises", RecursionError)
    assert got == expected


@pytest.mark.parametrize("depth", [protocol.MAX_FRAME_DEPTH + 1, 500, 1020, 1030])
def test_nesting_between_the_bound_and_the_parsers_limits_gets_json_s_verdict(depth):
    # orjson reads up to 1024 levels, json up to its recursion limit (about 1000, less the
    # caller's stack): either way the outcome is json's, a reply below its limit, a close above.
    text = '{"uuid":"u1","action":"sync","x":' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"
    assert_parses_as_json_does(text)


def test_a_float_orjson_reads_is_the_float_json_reads():
    for literal in ("0.1", "1e-7", "2.5e-324", "1e-400", "1.7976931348623157e308", "-0.0", "-0",
                    "123456789012345678.5", "9223372036854775807.0", "1E5"):
        assert_parses_as_json_does('{"uuid":"u1","action":"sync","after":' + literal + "}")


def test_encode_frame_writes_nan_as_null():
    # Not JSON: json wrote `NaN`, which a browser's JSON.parse refuses; orjson writes null.
    assert encode_frame({"x": float("nan"), "y": float("inf")}) == b'{"x":null,"y":null}'


@pytest.mark.parametrize("size", [10, 300, 5000, 60000])
def test_a_frame_holds_no_more_memory_than_its_size(size):
    # orjson's bytes keep its write buffer (4 KiB at least): a frame waits in send queues.
    import tracemalloc
    reply = {"uuid": "u1", "status": "success", "text": "x" * size}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        frames = [encode_frame(reply) for _ in range(20)]
        held = (tracemalloc.get_traced_memory()[0] - before) / len(frames)
    finally:
        tracemalloc.stop()
    assert held < len(frames[0]) + 200
