"""Live delivery of REST writes: each publishes the WebSocket protocol's success reply to the right
users (chat.events), as one bus envelope to the gateways that hold them (chat.bus)."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from rest_framework.test import APIClient

from chat import bus as broadcast
from chat import services
from chat.models import ChatMessage, ChatRoom
from tests.chat.conftest import REAL_PUBLISH, online_on
from websockets_gateway.keys import Keys
from workers import dispatch

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

TOPIC = "test_worker_response"
GATEWAY_TOPIC = Keys(TOPIC).gateway_reply_topic("gw-1")


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    return client


@pytest.fixture
def as_alice(alice) -> APIClient:
    return token_client(alice)


def post(client: APIClient, url: str, body: Any = None):
    return client.post(url, body, format="json")


def worker(user, frame: dict[str, Any]) -> dict[str, Any]:
    """The envelope a worker publishes for this client frame."""
    data = {**frame, "session_data": {"user_pk": user.pk}, "request_id": "gw:1", "reply_to": "gw"}
    return dispatch.handle(data, "worker_response").envelope


def stored_change(reply: dict[str, Any]) -> dict[str, Any]:
    """A live reply of a change that was stored, without its cursor: the cursor is checked here (a
    string, the reply's last key), the rest is for the caller to compare whole."""
    assert list(reply)[-1] == "cursor" and isinstance(reply["cursor"], str), reply
    return {key: value for key, value in reply.items() if key != "cursor"}


def changes(published: list[tuple[dict[str, Any], list[int]]]) -> list[tuple[dict[str, Any], list[int]]]:
    """What was published, each reply a stored change's (`stored_change`)."""
    return [(stored_change(reply), send_to) for reply, send_to in published]


# The reply bodies and who gets them (recorded publisher, tests/chat/conftest.py)

def test_new_message_goes_to_every_member(as_alice, alice, bob, room, published):
    response = post(as_alice, f"/api/rooms/{room.pk.hex}/messages/", {"text": "hi", "uuid": "m-1"})
    assert changes(published) == [({"uuid": "m-1", "action": "new_message", "room": room.pk.hex, "status": "success",
                           "message": response.json()}, [alice.pk, bob.pk])]


def test_without_a_client_uuid_the_reply_gets_a_fresh_one(as_alice, room, published):
    for _ in range(2):
        post(as_alice, f"/api/rooms/{room.pk.hex}/messages/", {"text": "hi"})
    uuids = [response["uuid"] for response, _ in published]
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in uuids)
    assert uuids[0] != uuids[1]


def test_new_message_reply_is_the_workers_reply(as_alice, alice, room, published):
    post(as_alice, f"/api/rooms/{room.pk.hex}/messages/", {"text": "hi", "uuid": "same-1"})
    # The worker answering a retry of that message over the WebSocket says exactly the same, but
    # for the cursor: the retry stored nothing.
    over_websocket = worker(alice, {"uuid": "same-1", "action": "new_message", "room": room.pk.hex, "text": "hi"})
    assert changes(published) == [(over_websocket["response"], over_websocket["send_to"])]


def test_direct_message_goes_to_both_users(as_alice, alice, bob, published):
    response = post(as_alice, "/api/direct-messages/", {"to": "bob", "text": "psst", "uuid": "d-1"})
    room = ChatRoom.objects.get()
    assert changes(published) == [({"uuid": "d-1", "action": "direct_message", "room": room.pk.hex,
                                    "status": "success", "message": response.json()}, [alice.pk, bob.pk])]
    over_websocket = worker(alice, {"uuid": "d-1", "action": "direct_message", "to": "bob", "text": "psst"})
    assert changes(published)[0] == (over_websocket["response"], over_websocket["send_to"])


def test_create_room_goes_to_every_member(as_alice, alice, bob, carol, published):
    response = post(as_alice, "/api/rooms/", {"name": "Plans", "members": ["bob", "carol"], "uuid": "c-1"})
    assert changes(published) == [
        ({"uuid": "c-1", "action": "create_room", "status": "success", "room": response.json()},
         [alice.pk, bob.pk, carol.pk])]
    over_websocket = worker(alice, {"uuid": "c-2", "action": "create_room", "name": "Plans",
                                    "members": ["bob", "carol"]})["response"]
    assert list(over_websocket) == list(published[0][0])
    assert list(over_websocket["room"]) == list(published[0][0]["room"])


def test_add_members_goes_to_every_member_the_new_ones_included(as_alice, alice, bob, carol, room, published):
    response = post(as_alice, f"/api/rooms/{room.pk.hex}/members/", {"members": ["carol"], "uuid": "a-1"})
    assert changes(published) == [
        ({"uuid": "a-1", "action": "add_members", "status": "success", "room": response.json()},
         [alice.pk, bob.pk, carol.pk])]


def test_leave_room_goes_to_the_remaining_members_and_the_leaver(as_alice, alice, bob, carol, make_room,
                                                                  published):
    room = make_room(alice, bob, carol)
    post(as_alice, f"/api/rooms/{room.pk.hex}/leave/", {"uuid": "l-1"})
    assert changes(published) == [({"uuid": "l-1", "action": "leave_room", "room": room.pk.hex, "status": "success",
                           "user": {"username": "alice"}}, [alice.pk, bob.pk, carol.pk])]
    over_websocket = worker(bob, {"uuid": "l-2", "action": "leave_room", "room": room.pk.hex})
    assert stored_change(over_websocket["response"]) == {**changes(published)[0][0], "uuid": "l-2",
                                                         "user": {"username": "bob"}}
    assert over_websocket["send_to"] == [bob.pk, carol.pk]


def test_leave_room_without_a_body(as_alice, alice, bob, room, published):
    assert as_alice.post(f"/api/rooms/{room.pk.hex}/leave/").status_code == 204
    assert published[0][0]["action"] == "leave_room" and published[0][1] == [alice.pk, bob.pk]


def test_mark_read_goes_to_the_readers_connections(as_alice, alice, bob, room, published):
    message = ChatMessage.objects.create(room=room, user=bob, text="hi")
    post(as_alice, f"/api/rooms/{room.pk.hex}/read/", {"message": message.pk, "uuid": "r-1"})
    expected = {"uuid": "r-1", "action": "mark_read", "room": room.pk.hex, "status": "success",
                "message": message.pk, "last_read_id": message.pk, "unread_count": 0}
    assert changes(published) == [(expected, [alice.pk])]
    # The same mark again over the WebSocket moves nothing: the same reply, without a cursor.
    over_websocket = worker(alice, {"uuid": "r-1", "action": "mark_read", "room": room.pk.hex, "message": message.pk})
    assert changes(published)[0] == (over_websocket["response"], over_websocket["send_to"])


# The changes of a message: edit, delete, reactions

MESSAGE_CHANGES = [
    # (action, by the author or another member, method, path after /api/messages/ID/, body)
    ("edit_message", "author", "patch", "", {"text": "hi, all", "uuid": "x-1"}),
    ("delete_message", "author", "delete", "", {"uuid": "x-1"}),
    ("add_reaction", "member", "put", "reactions/%F0%9F%91%8D/", {"uuid": "x-1"}),
    ("remove_reaction", "member", "delete", "reactions/%F0%9F%91%8D/", {"uuid": "x-1"}),
]


def change(client: APIClient, message: ChatMessage, method: str, suffix: str, body: Any):
    return getattr(client, method)(f"/api/messages/{message.pk}/{suffix}", body, format="json")


def message_to_change(alice, bob, room: ChatRoom, action: str, published: list) -> ChatMessage:
    """alice's message in `room`; for remove_reaction, with bob's 👍 (its publish forgotten)."""
    message = services.post_message(alice, room.pk.hex, "hi", None).message
    if action == "remove_reaction":
        change(token_client(bob), message, "put", "reactions/%F0%9F%91%8D/", None)
    published.clear()
    return message


@pytest.mark.parametrize("action, who, method, suffix, body", MESSAGE_CHANGES)
def test_a_message_change_goes_to_every_member_with_its_cursor(alice, bob, carol, make_room, published,
                                                               action, who, method, suffix, body):
    room = make_room(alice, bob, carol)
    message = message_to_change(alice, bob, room, action, published)
    response = change(token_client(alice if who == "author" else bob), message, method, suffix, body)
    assert response.status_code == 200, response.content
    # The room is the message's: the frame names none, as over the WebSocket.
    assert changes(published) == [({"uuid": "x-1", "action": action, "room": room.pk.hex, "status": "success",
                                    "message": response.json()}, [alice.pk, bob.pk, carol.pk])]


@pytest.mark.parametrize("action, who, method, suffix, body", MESSAGE_CHANGES)
def test_a_message_change_reply_is_the_workers_reply(alice, bob, room, published, action, who, method, suffix, body):
    message = message_to_change(alice, bob, room, action, published)
    user = alice if who == "author" else bob
    change(token_client(user), message, method, suffix, body)
    # The worker answering a retry of it over the WebSocket (same uuid: not made again) says the
    # same, but for the cursor: the retry stored nothing.
    frame = {"uuid": "x-1", "action": action, "message": message.pk, "text": "hi, all", "emoji": "👍"}
    over_websocket = worker(user, frame)
    assert "cursor" not in over_websocket["response"]
    assert changes(published) == [(over_websocket["response"], over_websocket["send_to"])]


def test_reads_publish_nothing(as_alice, room, published):
    as_alice.get("/api/rooms/")
    as_alice.get(f"/api/rooms/{room.pk.hex}/")
    as_alice.get(f"/api/rooms/{room.pk.hex}/messages/")
    assert published == []


# Through the real publisher, on an in-process Redis

@pytest.fixture
def bus(settings, monkeypatch, alice, bob, carol):
    """chat.bus on fakeredis, alice, bob and carol connected to one gateway, and a subscriber to
    that gateway's reply topic and to the response topic."""
    monkeypatch.setattr(broadcast, "publish", REAL_PUBLISH)
    settings.CHAT = {**settings.CHAT, "WORKER_RESPONSE_TOPIC": TOPIC}
    server = fakeredis.FakeServer()
    monkeypatch.setattr(broadcast, "_client", fakeredis.FakeRedis(server=server))
    online_on(broadcast._client, Keys(TOPIC), "gw-1", alice.pk, bob.pk, carol.pk)
    subscriber = fakeredis.FakeRedis(server=server).pubsub()
    subscriber.subscribe(TOPIC, GATEWAY_TOPIC)
    for _ in range(2):
        assert subscriber.get_message(timeout=1)["type"] == "subscribe"
    yield subscriber
    subscriber.close()


def received(subscriber) -> list[tuple[str, dict[str, Any]]]:
    messages = []
    while (message := subscriber.get_message(timeout=0.2)) is not None:
        assert message["type"] == "message"
        messages.append((message["channel"].decode(), json.loads(message["data"])))
    return messages


def envelope(response: dict[str, Any], send_to: list[int]) -> dict[str, Any]:
    return {"type": "success_response", "request_id": None, "send_to": send_to, "session_data": None,
            "response": response}


def test_each_rest_write_publishes_one_envelope_to_the_gateway_of_its_recipients(bus, as_alice, alice, bob,
                                                                               carol):
    created = post(as_alice, "/api/rooms/", {"name": "Plans", "members": ["bob"], "uuid": "c-1"}).json()
    room_id = created["id"]
    posted = post(as_alice, f"/api/rooms/{room_id}/messages/", {"text": "hi", "uuid": "m-1"}).json()
    message_url = f"/api/messages/{posted['id']}/"
    edited = as_alice.patch(message_url, {"text": "hi!", "uuid": "e-1"}, format="json").json()
    reacted = as_alice.put(message_url + "reactions/%F0%9F%91%8D/", {"uuid": "ra-1"}, format="json").json()
    unreacted = as_alice.delete(message_url + "reactions/%F0%9F%91%8D/", {"uuid": "rr-1"}, format="json").json()
    deleted = as_alice.delete(message_url, {"uuid": "x-1"}, format="json").json()
    added = post(as_alice, f"/api/rooms/{room_id}/members/", {"members": ["carol"], "uuid": "a-1"}).json()
    read = post(as_alice, f"/api/rooms/{room_id}/read/", {"message": posted["id"], "uuid": "r-1"}).json()
    post(as_alice, f"/api/rooms/{room_id}/leave/", {"uuid": "l-1"})
    direct = post(as_alice, "/api/direct-messages/", {"to": "bob", "text": "psst", "uuid": "d-1"}).json()
    # Every one stored a change: each carries a cursor (checked, then left out of the comparison).
    assert [(topic, {**sent, "response": stored_change(sent["response"])}) for topic, sent in received(bus)] == [
        (GATEWAY_TOPIC, envelope(value, send_to)) for value, send_to in [
            ({"uuid": "c-1", "action": "create_room", "status": "success", "room": created}, [alice.pk, bob.pk]),
            ({"uuid": "m-1", "action": "new_message", "room": room_id, "status": "success", "message": posted},
             [alice.pk, bob.pk]),
            ({"uuid": "e-1", "action": "edit_message", "room": room_id, "status": "success", "message": edited},
             [alice.pk, bob.pk]),
            ({"uuid": "ra-1", "action": "add_reaction", "room": room_id, "status": "success", "message": reacted},
             [alice.pk, bob.pk]),
            ({"uuid": "rr-1", "action": "remove_reaction", "room": room_id, "status": "success",
              "message": unreacted}, [alice.pk, bob.pk]),
            ({"uuid": "x-1", "action": "delete_message", "room": room_id, "status": "success", "message": deleted},
             [alice.pk, bob.pk]),
            ({"uuid": "a-1", "action": "add_members", "status": "success", "room": added},
             [alice.pk, bob.pk, carol.pk]),
            ({"uuid": "r-1", "action": "mark_read", "room": room_id, "status": "success", "message": posted["id"],
              "last_read_id": read["last_read_id"], "unread_count": read["unread_count"]}, [alice.pk]),
            ({"uuid": "l-1", "action": "leave_room", "room": room_id, "status": "success",
              "user": {"username": "alice"}}, [alice.pk, bob.pk, carol.pk]),
            ({"uuid": "d-1", "action": "direct_message", "room": direct["room"], "status": "success",
              "message": direct}, [alice.pk, bob.pk]),
        ]]
    assert (edited["text"], reacted["reactions"], unreacted["reactions"], deleted["deleted"]) == (
        "hi!", [{"emoji": "👍", "users": ["alice"]}], [], True)


def test_refused_writes_publish_nothing(bus, as_alice, alice, room):
    post(as_alice, f"/api/rooms/{room.pk.hex}/messages/", {"text": ""})
    message = services.post_message(alice, room.pk.hex, "hi", None).message  # stored, not published
    as_alice.patch(f"/api/messages/{message.pk}/", {"text": ""}, format="json")
    token_client(room.users.get(username="bob")).delete(f"/api/messages/{message.pk}/")
    as_alice.put(f"/api/messages/{message.pk}/reactions/%20/")
    post(as_alice, "/api/direct-messages/", {"to": "nobody", "text": "hi"})
    post(token_client(room.users.get(username="bob")), "/api/rooms/" + "ab" * 16 + "/leave/")
    assert received(bus) == []


# When the bus is down

SECRET_TEXT = "the text never goes to the log"


def test_with_redis_down_the_message_is_stored_and_the_call_succeeds(settings, monkeypatch, caplog, as_alice,
                                                                      room):
    monkeypatch.setattr(broadcast, "publish", REAL_PUBLISH)
    settings.CHAT = {**settings.CHAT, "REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens on port 1
    monkeypatch.setattr(broadcast, "_client", None)
    url = f"/api/rooms/{room.pk.hex}/messages/"
    with caplog.at_level(logging.WARNING, logger="chat.events"):
        response = post(as_alice, url, {"text": SECRET_TEXT})
    assert response.status_code == 201
    assert ChatMessage.objects.get().text == SECRET_TEXT
    warnings = [record for record in caplog.records if record.name == "chat.events"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert room.pk.hex in warnings[0].getMessage() and url in warnings[0].getMessage()
    assert SECRET_TEXT not in caplog.text


def failing_publisher(response: dict[str, Any], send_to: list[int]) -> None:
    raise RuntimeError("a bug in the publisher")


def test_a_failing_publisher_is_logged_and_does_not_fail_the_request(monkeypatch, caplog, as_alice, room):
    monkeypatch.setattr(broadcast, "publish", failing_publisher)
    with caplog.at_level(logging.ERROR, logger="chat.events"):
        response = post(as_alice, f"/api/rooms/{room.pk.hex}/messages/", {"text": SECRET_TEXT})
    assert response.status_code == 201
    assert ChatMessage.objects.count() == 1
    errors = [record for record in caplog.records if record.name == "chat.events"]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert room.pk.hex in errors[0].getMessage()
    assert SECRET_TEXT not in caplog.text


def test_the_chat_app_publishes_through_its_own_bus_and_needs_no_setting_for_it():
    from project import settings as project_settings

    assert not hasattr(project_settings, "CHAT_EVENT_PUBLISHER")
    chat_folder = Path(broadcast.__file__).parent
    for source in chat_folder.rglob("*.py"):
        assert "workers" not in {node.names[0].name.split(".")[0] for node in ast.walk(ast.parse(source.read_text()))
                                 if isinstance(node, ast.Import)}, source
        assert "workers" not in {(node.module or "").split(".")[0] for node in ast.walk(ast.parse(source.read_text()))
                                 if isinstance(node, ast.ImportFrom)}, source
