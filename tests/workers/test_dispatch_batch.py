"""`workers.dispatch.process_batch`: requests that waited together are answered in order, one
reply each, each its own unit of work."""

from __future__ import annotations

import json

import pytest

from chat.models import ChatMessage
from workers import dispatch

from .test_dispatch import RESPONSE_TOPIC, bus_request


def raw(request) -> bytes:
    return json.dumps(request).encode()


def test_a_batch_is_answered_in_order_one_reply_each(alice, bob, carol, room):
    requests = [bus_request("new_message", user=alice, room=room.pk.hex, text="one"),
                bus_request("new_message", user=carol, room=room.pk.hex, text="not a member"),
                bus_request("list_rooms", user=bob),
                bus_request("new_message", user=bob, room=room.pk.hex, text="two")]
    answered = dispatch.process_batch([raw(r) for r in requests] + [b"not json"], RESPONSE_TOPIC)
    assert len(answered) == 5 and answered[4] is None
    responses = [outgoing.envelope["response"] for outgoing in answered[:4]]
    assert [r["uuid"] for r in responses] == [r["uuid"] for r in requests]
    assert [r["status"] for r in responses] == ["success", "error", "success", "success"]
    assert responses[1]["error_code"] == "invalid_room_id"
    assert list(ChatMessage.objects.order_by("id").values_list("text", flat=True)) == ["one", "two"]


def test_a_batch_that_fails_half_way_is_safe_to_retry(alice, room, monkeypatch):
    # The database failing outside a handler ends the batch: the consumer logs it and the
    # requesters get `timeout`. What was stored stays stored, once: the retry with the same
    # uuids stores nothing twice and answers the stored messages.
    real_handle = dispatch.handle
    handled = []

    def failing_after_two(data, response_topic, online=None):
        if len(handled) == 2:
            raise RuntimeError("the database connection is gone")
        handled.append(data["uuid"])
        return real_handle(data, response_topic, online)

    requests = [bus_request("new_message", user=alice, room=room.pk.hex, text=str(n)) for n in range(3)]
    monkeypatch.setattr(dispatch, "handle", failing_after_two)
    with pytest.raises(RuntimeError):
        dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    monkeypatch.setattr(dispatch, "handle", real_handle)
    answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    assert [o.envelope["response"]["message"]["text"] for o in answered] == ["0", "1", "2"]
    assert sorted(ChatMessage.objects.values_list("text", flat=True)) == ["0", "1", "2"]


def test_a_retry_inside_the_same_batch_is_stored_once(alice, room):
    request = bus_request("new_message", user=alice, room=room.pk.hex, text="once")
    answered = dispatch.process_batch([raw(request), raw(request)], RESPONSE_TOPIC)
    messages = [o.envelope["response"]["message"] for o in answered]
    assert messages[0] == messages[1]
    assert ChatMessage.objects.count() == 1
