"""`chat.signals`: sent once per stored change, with its objects, after the commit, from the domain
functions, so a WebSocket worker's request and a REST API call send the same."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from chat import signals
from chat.models import ChatMessage, ChatRoom
from workers import dispatch

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

SIGNALS = ("message_posted", "message_changed", "room_created", "members_added", "member_left", "room_read")


@pytest.fixture(autouse=True)
def keep_the_test_connection(monkeypatch) -> None:
    # process_batch drops stale connections; inside the test's transaction it would close the test's own.
    monkeypatch.setattr(dispatch, "close_old_connections", lambda: None)


@pytest.fixture
def sent() -> list[tuple[str, dict[str, Any]]]:
    """Every chat signal sent in this test: (name, its arguments but `signal`), the sender checked."""
    recorded: list[tuple[str, dict[str, Any]]] = []
    receivers = []
    for name in SIGNALS:
        def receiver(sender, signal, name=name, **arguments):
            assert sender is (ChatMessage if name.startswith("message_") else ChatRoom)
            recorded.append((name, arguments))
        getattr(signals, name).connect(receiver, weak=False)
        receivers.append((name, receiver))
    yield recorded
    for name, receiver in receivers:
        getattr(signals, name).disconnect(receiver)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run what the test does as if each call committed (pytest-django holds one transaction)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def over_websocket(user, action: str, **fields: Any) -> dict[str, Any]:
    request = {"uuid": uuid.uuid4().hex, "action": action, **fields, "session_data": {"user_pk": user.pk},
               "request_id": "gateway-1:1", "reply_to": "gateway-1"}
    response = dispatch.handle(request, "worker_response").envelope["response"]
    assert response["status"] == "success", response
    return response


def over_rest(user, path: str, body: Any = None):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    response = client.post(path, body, format="json")
    assert response.status_code in (200, 201, 204), response.content
    return response


# message_posted

def test_message_posted_once_per_stored_message_not_for_a_retry(committed, sent, alice, bob, room):
    frame = {"room": room.pk.hex, "text": "hi"}
    with committed():
        over_websocket(alice, "new_message", **frame)
    [(name, arguments)] = sent
    message = ChatMessage.objects.get()
    assert name == "message_posted"
    assert arguments == {"message": message, "room_id": room.pk, "member_ids": [alice.pk, bob.pk]}
    assert arguments["message"].text == "hi" and arguments["message"].user.username == "alice"
    with committed():
        over_rest(alice, f"/api/rooms/{room.pk.hex}/messages/", {"text": "again", "uuid": "r-1"})
        over_rest(alice, f"/api/rooms/{room.pk.hex}/messages/", {"text": "again", "uuid": "r-1"})
    assert [name for name, _ in sent] == ["message_posted", "message_posted"]
    assert sent[1][1]["message"].text == "again" and sent[1][1]["member_ids"] == [alice.pk, bob.pk]


def test_message_changed_once_per_stored_change_with_the_message_as_stored(committed, sent, alice, bob, room):
    with committed():
        message_id = over_websocket(alice, "new_message", room=room.pk.hex, text="hi")["message"]["id"]
        over_websocket(alice, "edit_message", message=message_id, text="hello", uuid="e-1")
        over_websocket(alice, "edit_message", message=message_id, text="hello", uuid="e-1")  # a retry: nothing
        over_websocket(bob, "add_reaction", message=message_id, emoji="👍")
        over_websocket(bob, "add_reaction", message=message_id, emoji="👍")  # there already: nothing
        over_websocket(bob, "remove_reaction", message=message_id, emoji="👍")
        over_websocket(alice, "delete_message", message=message_id)
        over_websocket(alice, "delete_message", message=message_id)  # deleted already: nothing
    changed = [arguments for name, arguments in sent if name == "message_changed"]
    assert [(arguments["action"], arguments["user"]) for arguments in changed] == [
        ("edit_message", alice), ("add_reaction", bob), ("remove_reaction", bob), ("delete_message", alice)]
    assert all(arguments["member_ids"] == [alice.pk, bob.pk] and arguments["message"].pk == message_id
               for arguments in changed)
    assert changed[-1]["message"].deleted and changed[-1]["message"].text == ""


def test_a_batch_of_new_messages_sends_one_per_stored_message_in_order(committed, sent, alice, bob, carol, room):
    requests = [{"uuid": f"b-{n}", "action": "new_message", "room": room.pk.hex, "text": str(n),
                 "session_data": {"user_pk": user.pk}, "request_id": f"gateway-1:{n}", "reply_to": "gateway-1"}
                for n, user in enumerate([alice, bob, carol, alice])]
    with committed():
        dispatch.process_batch([json.dumps(request).encode() for request in requests], "worker_response")
    stored = list(ChatMessage.objects.order_by("id"))
    assert [message.text for message in stored] == ["0", "1", "3"]  # carol is no member
    assert sent == [("message_posted", {"message": message, "room_id": room.pk, "member_ids": [alice.pk, bob.pk]})
                    for message in stored]
    # The same batch again: every message is a retry, stored already.
    with committed():
        dispatch.process_batch([json.dumps(request).encode() for request in requests], "worker_response")
    assert len(sent) == 3


def test_sending_costs_no_query(committed, alice, bob, room, request):
    def queries() -> int:
        frames = [json.dumps({"uuid": uuid.uuid4().hex, "action": "new_message", "room": room.pk.hex, "text": "x",
                              "session_data": {"user_pk": alice.pk}, "request_id": "g:1", "reply_to": "g"}).encode()
                  for _ in range(3)]
        with committed(), CaptureQueriesContext(connection) as captured:
            dispatch.process_batch(frames, "worker_response")
            over_websocket(alice, "mark_read", room=room.pk.hex, message=ChatMessage.objects.order_by("-id")[0].pk)
        return len(captured)

    without_receivers = queries()
    request.getfixturevalue("sent")
    assert queries() == without_receivers


# The room signals, over the WebSocket and over REST alike

def test_room_signals_over_the_websocket(committed, sent, alice, bob, carol):
    with committed():
        created = over_websocket(alice, "create_room", name="Plans", members=["bob"])
    room = ChatRoom.objects.get(pk=created["room"]["id"])
    with committed():
        over_websocket(alice, "add_members", room=room.pk.hex, members=["carol"])
        over_websocket(bob, "new_message", room=room.pk.hex, text="hi")
        message = ChatMessage.objects.get()
        over_websocket(alice, "mark_read", room=room.pk.hex, message=message.pk)
        over_websocket(alice, "mark_read", room=room.pk.hex, message=message.pk)  # no move: no signal
        over_websocket(carol, "leave_room", room=room.pk.hex)
    assert_room_signals(sent, room, message, alice, bob, carol)


def test_room_signals_over_rest(committed, sent, alice, bob, carol):
    with committed():
        created = over_rest(alice, "/api/rooms/", {"name": "Plans", "members": ["bob"]}).json()
    room = ChatRoom.objects.get(pk=created["id"])
    with committed():
        over_rest(alice, f"/api/rooms/{room.pk.hex}/members/", {"members": ["carol"]})
        over_rest(bob, f"/api/rooms/{room.pk.hex}/messages/", {"text": "hi"})
        message = ChatMessage.objects.get()
        over_rest(alice, f"/api/rooms/{room.pk.hex}/read/", {"message": message.pk})
        over_rest(alice, f"/api/rooms/{room.pk.hex}/read/", {"message": message.pk})
        over_rest(carol, f"/api/rooms/{room.pk.hex}/leave/")
    assert_room_signals(sent, room, message, alice, bob, carol)


def assert_room_signals(sent, room, message, alice, bob, carol) -> None:
    assert [name for name, _ in sent] == ["room_created", "members_added", "message_posted", "room_read",
                                          "member_left"]
    created, added, posted, read, left = (arguments for _, arguments in sent)
    assert created == {"room": room, "user": alice, "member_ids": [alice.pk, bob.pk]}
    assert added == {"room": room, "user": alice, "added": [carol], "member_ids": [alice.pk, bob.pk, carol.pk]}
    assert posted == {"message": message, "room_id": room.pk, "member_ids": [alice.pk, bob.pk, carol.pk]}
    assert read == {"user": alice, "room": room, "last_read_id": message.pk, "unread_count": 0}
    assert left == {"room_id": room.pk, "user": carol, "member_ids": [alice.pk, bob.pk]}


def test_a_first_direct_message_creates_its_room_then_posts(committed, sent, alice, bob):
    with committed():
        over_rest(alice, "/api/direct-messages/", {"to": "bob", "text": "psst"})
        over_websocket(bob, "direct_message", to="alice", text="hey")
    room = ChatRoom.objects.get()
    first, second = ChatMessage.objects.order_by("id")
    assert sent == [("room_created", {"room": room, "user": alice, "member_ids": [alice.pk, bob.pk]}),
                    ("message_posted", {"message": first, "room_id": room.pk, "member_ids": [alice.pk, bob.pk]}),
                    ("message_posted", {"message": second, "room_id": room.pk, "member_ids": [alice.pk, bob.pk]})]


def test_refused_requests_send_nothing(committed, sent, alice, carol, room):
    with committed():
        dispatch.handle({"uuid": "x", "action": "new_message", "room": room.pk.hex, "text": "hi",
                         "session_data": {"user_pk": carol.pk}, "request_id": "g:1", "reply_to": "g"}, "r")
        dispatch.handle({"uuid": "y", "action": "leave_room", "room": room.pk.hex,
                         "session_data": {"user_pk": carol.pk}, "request_id": "g:2", "reply_to": "g"}, "r")
    assert sent == []


# After the commit

def test_inside_a_transaction_the_signal_waits_for_the_commit(django_capture_on_commit_callbacks, sent, alice,
                                                              room):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with transaction.atomic():
            over_websocket(alice, "new_message", room=room.pk.hex, text="hi")
    assert sent == [] and len(callbacks) == 1
    callbacks[0]()
    assert [name for name, _ in sent] == ["message_posted"]


def test_a_failing_receiver_is_logged_and_the_request_succeeds(committed, sent, caplog, alice, room):
    def broken(sender, **arguments):
        raise RuntimeError("a bug in a receiver")

    signals.message_posted.connect(broken, weak=False)
    try:
        with committed(), caplog.at_level(logging.ERROR, logger="chat.signals"):
            response = over_websocket(alice, "new_message", room=room.pk.hex, text="hi")
    finally:
        signals.message_posted.disconnect(broken)
    assert response["message"]["text"] == "hi"
    assert [name for name, _ in sent] == ["message_posted"]  # the other receiver still ran
    [record] = [record for record in caplog.records if record.name == "chat.signals"]
    assert "message_posted" in record.getMessage() and "broken" in record.getMessage()
    assert record.exc_info is not None
