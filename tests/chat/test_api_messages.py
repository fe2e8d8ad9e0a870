"""The REST API's changes of a message: edit (PATCH), delete (DELETE), reactions (PUT and DELETE
.../reactions/<emoji>/), with the WebSocket's rules, error codes and retries. What they publish live
is recorded (tests/chat/conftest.py); its bodies are checked in test_events.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from chat import lifecycle, services
from chat.models import ChatChange, ChatMessage, ChatReaction, ChatRoom
from chat.serializers import MessageSerializer
from tests.chat.test_api import (  # noqa: F401 (login: a fixture)
    TEXT_BODIES_REFUSED,
    assert_refused,
    login,
    session_client,
    token_client,
)
from tests.chat.test_api_auth import assert_throttled, rates  # noqa: F401 (rates: a fixture)
from workers import dispatch

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

Kind = ChatChange.Kind
SECRET = "the launch code is 0000"


def message_url(message: ChatMessage | int | str) -> str:
    message_id = message.pk if isinstance(message, ChatMessage) else message
    return f"/api/messages/{message_id}/"


def reaction_url(message: ChatMessage | int | str, emoji: str) -> str:
    # Percent-encoded as a client must: every character but letters, digits and "_.-~".
    return f"{message_url(message)}reactions/{quote(emoji, safe='')}/"


def post_message(user, room: ChatRoom, text: str = "hello") -> ChatMessage:
    return services.post_message(user, room.pk.hex, text, None).message


def send(client: APIClient, method: str, url: str, body: Any = None):
    return getattr(client, method)(url, body, format="json")


def stored(message: ChatMessage) -> ChatMessage:
    return ChatMessage.objects.get(pk=message.pk)


def as_stored(message: ChatMessage) -> dict[str, Any]:
    return MessageSerializer(stored(message)).data


@pytest.fixture
def message(alice, room) -> ChatMessage:
    """alice's message in the room of alice and bob."""
    return post_message(alice, room)


@pytest.fixture
def as_alice(alice) -> APIClient:
    return token_client(alice)


# Edit

def test_the_author_edits_a_message(login, alice, bob, message, published):
    response = send(login(alice), "patch", message_url(message), {"text": "hello, world", "uuid": "e-1"})
    assert response.status_code == 200, response.content
    body = response.json()
    row = stored(message)
    assert row.text == "hello, world" and row.edited_at is not None
    assert body == {"id": message.pk, "user": {"username": "alice"}, "room": message.room_id.hex,
                    "timestamp": message.date_created.timestamp(), "text": "hello, world",
                    "edited_at": row.edited_at.timestamp(), "deleted": False, "reactions": []}
    assert [(reply["action"], send_to) for reply, send_to in published] == [("edit_message", [alice.pk, bob.pk])]


def test_editing_to_the_same_text_changes_nothing_and_succeeds(as_alice, message, published):
    response = send(as_alice, "patch", message_url(message), {"text": "hello"})
    assert response.status_code == 200
    assert response.json()["edited_at"] is None and stored(message).edited_at is None
    assert not ChatChange.objects.filter(kind=Kind.EDIT_MESSAGE).exists()
    assert "cursor" not in published[0][0]  # nothing stored: no position in the feed


def test_an_edit_keeps_the_reactions(as_alice, bob, message):
    lifecycle.add_reaction(bob, message.pk, "👍", None)
    body = send(as_alice, "patch", message_url(message), {"text": "edited"}).json()
    assert body["reactions"] == [{"emoji": "👍", "users": ["bob"]}]


# Delete: 200 with the tombstone

def test_the_author_deletes_a_message_and_its_text_is_gone(login, alice, bob, room, published):
    message = post_message(alice, room, SECRET)
    lifecycle.add_reaction(bob, message.pk, "👍", None)
    response = send(login(alice), "delete", message_url(message), {"uuid": "d-1"})
    assert response.status_code == 200, response.content
    assert response.json() == {"id": message.pk, "user": {"username": "alice"}, "room": room.pk.hex,
                               "timestamp": message.date_created.timestamp(), "text": "", "edited_at": None,
                               "deleted": True, "reactions": []}
    assert (stored(message).deleted, stored(message).text) == (True, "")
    assert not ChatMessage.objects.filter(text__contains="launch").exists()
    assert not ChatReaction.objects.exists()
    assert [(reply["action"], send_to) for reply, send_to in published] == [("delete_message", [alice.pk, bob.pk])]
    # The tombstone keeps its place in the room's history.
    history = token_client(bob).get(f"/api/rooms/{room.pk.hex}/messages/").json()["results"]
    assert history == [response.json()]


def test_delete_without_a_body(as_alice, message):
    response = as_alice.delete(message_url(message))
    assert response.status_code == 200
    assert response.json()["deleted"] is True


def test_deleting_a_deleted_message_succeeds_and_stores_nothing(as_alice, message):
    first = send(as_alice, "delete", message_url(message))
    again = send(as_alice, "delete", message_url(message))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert ChatChange.objects.filter(kind=Kind.DELETE_MESSAGE).count() == 1


# Reactions: the emoji percent-encoded in the path

def test_add_and_remove_a_reaction(login, alice, bob, message, published):
    response = send(login(bob), "put", reaction_url(message, "👍"), {"uuid": "r-1"})
    assert response.status_code == 200, response.content
    assert response.json() == {**as_stored(message), "reactions": [{"emoji": "👍", "users": ["bob"]}]}
    assert send(login(alice), "put", reaction_url(message, "👍")).json()["reactions"] == [
        {"emoji": "👍", "users": ["bob", "alice"]}]
    response = send(login(bob), "delete", reaction_url(message, "👍"), {"uuid": "r-2"})
    assert response.status_code == 200
    assert response.json()["reactions"] == [{"emoji": "👍", "users": ["alice"]}]
    assert [reply["action"] for reply, _ in published] == ["add_reaction", "add_reaction", "remove_reaction"]
    assert all(send_to == [alice.pk, bob.pk] for _, send_to in published)


def test_adding_one_that_is_there_and_removing_one_that_is_not_succeed(as_alice, message):
    for method in ("put", "put", "delete", "delete"):
        assert send(as_alice, method, reaction_url(message, "🎉")).status_code == 200
    assert not ChatReaction.objects.exists()
    assert list(ChatChange.objects.filter(message=message).exclude(kind=Kind.NEW_MESSAGE)
                .values_list("kind", flat=True)) == [Kind.ADD_REACTION, Kind.REMOVE_REACTION]


@pytest.mark.parametrize("emoji", ["👍", "👨‍👩‍👧", ":+1:", "x" * 32, "a/b", "/", "//", "a/", "%", "%2F", "?#&",
                                   " x ", "a\nb", "+", "reactions"])
def test_any_string_of_1_to_32_characters_goes_through_the_path_as_it_is(as_alice, message, emoji):
    response = send(as_alice, "put", reaction_url(message, emoji))
    assert response.status_code == 200, response.content
    assert response.json()["reactions"] == [{"emoji": emoji, "users": ["alice"]}]
    assert ChatReaction.objects.get().emoji == emoji
    assert send(as_alice, "delete", reaction_url(message, emoji)).json()["reactions"] == []


def test_an_emoji_may_come_in_the_path_unencoded_where_the_url_allows(as_alice, message):
    assert send(as_alice, "put", message_url(message) + "reactions/:+1:/").json()["reactions"] == [
        {"emoji": ":+1:", "users": ["alice"]}]


@pytest.mark.parametrize("emoji", ["", " ", "\t\n", "x" * 33])
@pytest.mark.parametrize("method", ["put", "delete"])
def test_an_emoji_of_no_or_too_many_characters_or_only_white_space_is_refused(as_alice, message, emoji, method,
                                                                              published):
    assert_refused(send(as_alice, method, reaction_url(message, emoji)), "invalid_emoji")
    assert not ChatReaction.objects.exists()
    assert published == []


def test_an_emoji_with_a_nul_is_a_format_error(as_alice, message):
    assert_refused(send(as_alice, "put", reaction_url(message, "a\x00")), "invalid_message_format")


# Retries: the client's uuid, as for posting

def test_a_retried_edit_is_not_made_again_after_a_later_one(as_alice, message, published):
    url = message_url(message)
    send(as_alice, "patch", url, {"text": "first", "uuid": "e-1"})
    send(as_alice, "patch", url, {"text": "second", "uuid": "e-2"})
    retried = send(as_alice, "patch", url, {"text": "first", "uuid": "e-1"})
    assert retried.status_code == 200
    assert retried.json() == as_stored(message) and stored(message).text == "second"
    assert ChatChange.objects.filter(kind=Kind.EDIT_MESSAGE).count() == 2
    # Published again, as the worker does, without a cursor: nothing new was stored.
    assert len(published) == 3 and "cursor" not in published[2][0]
    assert published[2][0]["uuid"] == "e-1" and published[2][0]["message"] == retried.json()


def test_a_retried_reaction_is_not_made_again_after_its_removal(as_alice, bob, message):
    url = reaction_url(message, "👍")
    send(as_alice, "put", url, {"uuid": "r-1"})
    send(as_alice, "delete", url, {"uuid": "r-2"})
    retried = send(as_alice, "put", url, {"uuid": "r-1"})
    assert (retried.status_code, retried.json()["reactions"]) == (200, [])
    assert not ChatReaction.objects.exists()
    # And a retried removal after the reaction was added again removes nothing.
    send(as_alice, "put", url, {"uuid": "r-3"})
    assert send(as_alice, "delete", url, {"uuid": "r-2"}).json()["reactions"] == [
        {"emoji": "👍", "users": ["alice"]}]


def test_the_same_uuid_from_another_user_is_another_request(as_alice, bob, message):
    send(as_alice, "put", reaction_url(message, "👍"), {"uuid": "same"})
    response = send(token_client(bob), "put", reaction_url(message, "👍"), {"uuid": "same"})
    assert response.json()["reactions"] == [{"emoji": "👍", "users": ["alice", "bob"]}]


def worker(user, frame: dict[str, Any]) -> dict[str, Any]:
    """The envelope a worker publishes for this client frame (the gateway's keys added)."""
    data = {**frame, "session_data": {"user_pk": user.pk}, "request_id": "gw:1", "reply_to": "gw"}
    return dispatch.handle(data, "worker_response").envelope


def test_a_websocket_edit_retried_over_rest_is_not_made_again(as_alice, alice, message):
    worker(alice, {"uuid": "ws-1", "action": "edit_message", "message": message.pk, "text": "over the socket"})
    worker(alice, {"uuid": "ws-2", "action": "edit_message", "message": message.pk, "text": "later"})
    response = send(as_alice, "patch", message_url(message), {"text": "over the socket", "uuid": "ws-1"})
    assert response.status_code == 200 and response.json()["text"] == "later"


def test_a_rest_deletion_retried_over_the_websocket_answers_the_tombstone(as_alice, alice, message):
    response = send(as_alice, "delete", message_url(message), {"uuid": "rest-1"})
    over_websocket = worker(alice, {"uuid": "rest-1", "action": "delete_message", "message": message.pk})
    assert over_websocket["type"] == "success_response"
    assert over_websocket["response"]["message"] == response.json()
    assert ChatChange.objects.filter(kind=Kind.DELETE_MESSAGE).count() == 1


# Refused: another's message (403), one the user cannot see (404), a deleted one (409)

@pytest.mark.parametrize("method, body", [("patch", {"text": "mine now"}), ("delete", None)])
def test_only_the_author_edits_or_deletes(login, bob, message, method, body, published):
    response = send(login(bob), method, message_url(message), body)
    assert response.status_code == 403
    assert response.json() == {"error_code": "forbidden", "error_message": "Only its author may "
                               + ("edit" if method == "patch" else "delete") + " a message"}
    assert (stored(message).text, stored(message).deleted) == ("hello", False)
    assert published == []


def message_requests(message_id: Any) -> list[tuple[str, str, Any]]:
    return [("patch", message_url(message_id), {"text": "x"}), ("delete", message_url(message_id), None),
            ("put", reaction_url(message_id, "👍"), None), ("delete", reaction_url(message_id, "👍"), None)]


@pytest.mark.parametrize("index", range(4))
def test_a_non_member_gets_the_answer_of_a_message_that_does_not_exist(carol, message, index, published):
    client = token_client(carol)
    answers = [send(client, *message_requests(message_id)[index])
               for message_id in (message.pk, message.pk + 1000, "abc", "-1", "1.5", "1e3", "٣", "9" * 19, "9" * 30)]
    for response in answers:
        assert response.status_code == 404, response.content
        assert response.json() == {"error_code": "invalid_message_id", "error_message": "Invalid message id"}
    assert published == []
    assert (stored(message).text, stored(message).deleted) == ("hello", False)
    assert not ChatReaction.objects.exists()


def test_a_member_who_left_cannot_see_the_message_any_more(bob, message):
    client = token_client(bob)
    assert send(client, "post", f"/api/rooms/{message.room_id.hex}/leave/").status_code == 204
    assert send(client, "put", reaction_url(message, "👍")).status_code == 404


@pytest.mark.parametrize("index", [0, 2, 3])  # edit, add and remove a reaction
def test_a_deleted_message_takes_no_edit_and_no_reaction(alice, bob, message, index, published):
    lifecycle.delete_message(alice, message.pk, None)
    method, url, body = message_requests(message.pk)[index]
    response = send(token_client(alice if method == "patch" else bob), method, url, body)
    assert response.status_code == 409
    assert response.json() == {"error_code": "message_deleted", "error_message": "The message is deleted"}
    assert stored(message).text == "" and not ChatReaction.objects.exists()
    assert published == []


@pytest.mark.parametrize("body, code", TEXT_BODIES_REFUSED)
def test_an_edit_refused(as_alice, message, body, code, published):
    assert_refused(send(as_alice, "patch", message_url(message), body), code)
    assert stored(message).text == "hello" and stored(message).edited_at is None
    assert published == []


def test_an_edit_is_held_to_the_message_length_limit(as_alice, message, settings):
    settings.CHAT = {**settings.CHAT, "MAX_MESSAGE_LENGTH": 10}
    assert_refused(send(as_alice, "patch", message_url(message), {"text": "x" * 11}), "text_too_long")
    assert send(as_alice, "patch", message_url(message), {"text": "x" * 10}).status_code == 200


@pytest.mark.parametrize("index", [1, 2, 3])
@pytest.mark.parametrize("body", [{"uuid": 5}, {"uuid": ""}, ["d-1"]])
def test_a_bad_uuid_or_body_is_refused_before_anything_changes(as_alice, message, index, body, published):
    method, url, _ = message_requests(message.pk)[index]
    assert_refused(send(as_alice, method, url, body), "invalid_message_format")
    assert not stored(message).deleted and not ChatReaction.objects.exists()
    assert published == []


def test_bodies_are_json_only(as_alice, message):
    assert as_alice.patch(message_url(message), "text=hi", content_type="application/x-www-form-urlencoded"
                          ).status_code == 415
    assert stored(message).text == "hello"


# Authentication and throttles

def test_a_session_change_needs_the_csrf_token(alice, message):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    for method, url, body in message_requests(message.pk):
        assert send(client, method, url, body).status_code == 403
    assert send(session_client(alice), "patch", message_url(message), {"text": "with it"}).status_code == 200


def test_changes_are_writes_throttled_per_user(alice, message, rates):  # noqa: F811 (rates: the fixture)
    rates(write="3/min")
    client = token_client(alice)
    assert send(client, "patch", message_url(message), {"text": "one"}).status_code == 200
    assert send(client, "put", reaction_url(message, "👍")).status_code == 200
    assert send(client, "delete", reaction_url(message, "👍")).status_code == 200
    assert_throttled(send(client, "delete", message_url(message)))
    assert not stored(message).deleted
    assert client.get(f"/api/rooms/{message.room_id.hex}/messages/").status_code == 200  # reads are not counted
