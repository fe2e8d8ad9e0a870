"""The load generator's wires (bench/load.py): the chat's frames as they are, or in Socket.IO
events for the python-socketio comparison (the quick run of tests/bench/test_run.py drives both
against real servers)."""

from __future__ import annotations

import json

from bench.load import SocketIOWire, Wire, wire_for


def test_the_wire_is_chosen_by_the_endpoints_path():
    assert type(wire_for("http://127.0.0.1:8080/ws")) is Wire
    assert type(wire_for("http://127.0.0.1:8002/socket.io/?EIO=4&transport=websocket")) is SocketIOWire


def test_plain_frames_cost_nothing_per_frame():
    wire = Wire()
    assert wire.encode is None and wire.decode is None
    assert wire.answer("2") is None


def test_a_frame_travels_as_a_socketio_event_and_back():
    wire = SocketIOWire()
    frame = json.dumps({"uuid": "u1", "action": "new_message", "room": "r", "text": "a ] in it"},
                       separators=(",", ":"))
    sent = wire.encode(frame)
    assert json.loads(sent[2:]) == ["frame", json.loads(frame)]
    # The server's event, as python-socketio encodes it: the frame comes back as it was.
    assert wire.decode("42" + json.dumps(["frame", json.loads(frame)], separators=(",", ":"))) == frame


def test_engineio_pings_are_answered_and_other_packets_are_no_frames():
    wire = SocketIOWire()
    assert wire.decode("2") is None and wire.answer("2") == "3"
    assert wire.decode('42["other",{"uuid":"u1"}]') is None and wire.answer('42["other",{}]') is None
    assert wire.decode('40{"sid":"x"}') is None
