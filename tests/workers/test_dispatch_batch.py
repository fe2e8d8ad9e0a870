"""`workers.dispatch.process_batch`: requests that waited together are answered in one
transaction, each in a savepoint, and their replies only once everything is committed."""

from __future__ import annotations

import json

import pytest

from chat.models import ChatMessage
from workers import dispatch
from workers.handlers import ROUTES, Route

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


def test_a_request_that_fails_half_way_rolls_back_its_own_work_only(alice, bob, room, monkeypatch):
    def stores_then_fails(request):
        ChatMessage.objects.create(user=request.user, room=room, text="half done")
        raise RuntimeError("bug after a write")

    monkeypatch.setitem(ROUTES, "select_room", Route(stores_then_fails))
    requests = [bus_request("new_message", user=alice, room=room.pk.hex, text="kept"),
                bus_request("select_room", user=bob, room=room.pk.hex),
                bus_request("new_message", user=bob, room=room.pk.hex, text="kept too")]
    answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    assert [o.envelope["response"]["status"] for o in answered] == ["success", "error", "success"]
    assert answered[1].envelope["response"]["error_code"] == "server_error"
    assert sorted(ChatMessage.objects.values_list("text", flat=True)) == ["kept", "kept too"]


def test_a_batch_that_fails_as_a_whole_stores_nothing_and_answers_nothing(alice, room, monkeypatch):
    real_handle = dispatch.handle
    handled = []

    def failing_after_two(data, response_topic, online=None, savepoint=True):
        if len(handled) == 2:
            raise RuntimeError("the database connection is gone")
        handled.append(data["uuid"])
        return real_handle(data, response_topic, online, savepoint)

    monkeypatch.setattr(dispatch, "handle", failing_after_two)
    requests = [bus_request("new_message", user=alice, room=room.pk.hex, text=str(n)) for n in range(3)]
    with pytest.raises(RuntimeError):
        dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    # The two handled ones were in the batch's transaction: rolled back with it, so no reply
    # claims them (the requesters get `timeout` and retry with the same uuid).
    assert not ChatMessage.objects.exists()


def test_a_retry_inside_the_same_batch_is_stored_once(alice, room):
    request = bus_request("new_message", user=alice, room=room.pk.hex, text="once")
    answered = dispatch.process_batch([raw(request), raw(request)], RESPONSE_TOPIC)
    messages = [o.envelope["response"]["message"] for o in answered]
    assert messages[0] == messages[1]
    assert ChatMessage.objects.count() == 1
