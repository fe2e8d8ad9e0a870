"""The REST API's chat endpoints: rooms, messages, direct messages and read marks, with the
WebSocket protocol's rules and error codes. Live events are recorded (tests/chat/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from chat import rooms
from chat.models import ChatMessage, ChatRoom, Membership
from chat.serializers import MessageSerializer, RoomSerializer
from workers import dispatch

# WhiteNoise warns that STATIC_ROOT does not exist before `collectstatic`; not this API's business.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

ROOMS_URL = "/api/rooms/"
DIRECT_URL = "/api/direct-messages/"
CSRF_SECRET = "a" * 32
NOT_FOUND = {"error_code": "invalid_room_id", "error_message": "Invalid room id"}


def room_url(room: ChatRoom | str, suffix: str = "") -> str:
    room_id = room if isinstance(room, str) else room.pk.hex
    return f"{ROOMS_URL}{room_id}/{suffix}"


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    return client


def session_client(user) -> APIClient:
    # CSRF checked, as for a browser: the session cookie alone does not authorize a write.
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    client.cookies["csrftoken"] = CSRF_SECRET
    client.credentials(HTTP_X_CSRFTOKEN=CSRF_SECRET)
    return client


@pytest.fixture(params=["token", "session"])
def login(request) -> Callable[[Any], APIClient]:
    """A client logged in as a user, by token or by session: every endpoint takes both."""
    return token_client if request.param == "token" else session_client


@pytest.fixture
def as_alice(alice) -> APIClient:
    return token_client(alice)


def post(client: APIClient, url: str, body: Any = None):
    return client.post(url, body, format="json")


def add_messages(room: ChatRoom, users: list, count: int) -> list[ChatMessage]:
    return ChatMessage.objects.bulk_create(
        [ChatMessage(room=room, user=users[i % len(users)], text=f"message {i}") for i in range(count)])


# Authentication

ENDPOINTS = [
    ("get", ROOMS_URL), ("post", ROOMS_URL), ("post", DIRECT_URL),
    ("get", room_url("ab" * 16)), ("post", room_url("ab" * 16, "members/")), ("post", room_url("ab" * 16, "leave/")),
    ("get", room_url("ab" * 16, "messages/")), ("post", room_url("ab" * 16, "messages/")),
    ("post", room_url("ab" * 16, "read/")),
    ("patch", "/api/messages/1/"), ("delete", "/api/messages/1/"),
    ("put", "/api/messages/1/reactions/%F0%9F%91%8D/"), ("delete", "/api/messages/1/reactions/%F0%9F%91%8D/"),
]


@pytest.mark.parametrize("method, url", ENDPOINTS)
def test_every_endpoint_needs_a_user(db, method, url, published):
    response = getattr(APIClient(), method)(url, {}, format="json")
    assert response.status_code == 401  # the token scheme comes first: it names itself in WWW-Authenticate
    assert response["WWW-Authenticate"] == "Token"
    assert "error_code" not in response.json()
    assert published == []


def test_a_wrong_token_is_refused(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get(ROOMS_URL).status_code == 401


def test_an_inactive_users_token_is_refused(make_user):
    assert token_client(make_user("gone", is_active=False)).get(ROOMS_URL).status_code == 401


def test_a_session_write_needs_the_csrf_token(alice, room):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = post(client, room_url(room, "messages/"), {"text": "hi"})
    assert response.status_code == 403
    assert not ChatMessage.objects.exists()


# Rooms

def test_list_rooms_in_the_list_rooms_form_newest_activity_first(login, alice, bob, carol, make_room):
    older = make_room(alice, bob, name="older")
    make_room(alice, carol, name="newer")
    make_room(bob, carol, name="not alice's")
    ChatMessage.objects.create(room=older, user=bob, text="wakes the older room up")
    response = login(alice).get(ROOMS_URL)
    assert response.status_code == 200
    body = response.json()
    assert [summary["name"] for summary in body] == ["older", "newer"]
    assert body == RoomSerializer(rooms.list_rooms(alice), many=True).data
    assert body[0]["members"] == [{"username": "alice"}, {"username": "bob"}]
    assert body[0]["last_message"]["text"] == "wakes the older room up"
    assert body[0]["unread_count"] == 1
    assert set(body[0]) == {"id", "name", "is_direct", "members", "last_message", "unread_count"}


def test_list_rooms_of_a_user_without_rooms(as_alice):
    response = as_alice.get(ROOMS_URL)
    assert (response.status_code, response.json()) == (200, [])


def test_create_room(login, alice, bob, carol, published):
    response = post(login(alice), ROOMS_URL, {"name": "  Plans ", "members": ["carol", "bob", "carol"]})
    assert response.status_code == 201
    body = response.json()
    room = ChatRoom.objects.get()
    assert body == {"id": room.pk.hex, "name": "Plans", "is_direct": False, "last_message": None,
                    "unread_count": 0, "members": [{"username": "alice"}, {"username": "bob"}, {"username": "carol"}]}
    assert set(room.users.all()) == {alice, bob, carol}
    assert len(published) == 1


def test_create_a_room_of_the_user_alone(as_alice, alice):
    response = post(as_alice, ROOMS_URL, {"name": "Notes"})
    assert response.status_code == 201
    assert response.json()["members"] == [{"username": "alice"}]


def test_one_room(login, alice, room):
    for room_id in (room.pk.hex, str(room.pk)):  # 32 hex digits or hyphenated
        response = login(alice).get(room_url(room_id))
        assert response.status_code == 200
        assert response.json() == RoomSerializer(rooms.room_summary(alice, room.pk.hex)).data
        assert response.json()["id"] == room.pk.hex


def test_add_members(login, alice, bob, carol, room, published):
    response = post(login(alice), room_url(room, "members/"), {"members": ["carol", "bob"]})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == room.pk.hex
    assert body["members"] == [{"username": "alice"}, {"username": "bob"}, {"username": "carol"}]
    assert body["unread_count"] == 0  # as the newcomers see it, as in the live event
    assert set(room.users.all()) == {alice, bob, carol}
    assert len(published) == 1


def test_leave_room_answers_204_and_no_body(login, alice, bob, room, published):
    response = post(login(alice), room_url(room, "leave/"))
    assert response.status_code == 204
    assert response.content == b""
    assert list(room.users.all()) == [bob]
    assert len(published) == 1
    # Gone for the leaver: the room answers like any room the user is not in.
    assert token_client(alice).get(room_url(room)).status_code == 404


# Messages

def test_list_messages_newest_first(login, alice, bob, room):
    sent = add_messages(room, [alice, bob], 3)
    response = login(alice).get(room_url(room, "messages/"))
    assert response.status_code == 200
    body = response.json()
    assert body["results"] == MessageSerializer(list(reversed(sent)), many=True).data
    assert body["next"] is None and body["previous"] is None


def test_post_message(login, alice, bob, room, published):
    response = post(login(alice), room_url(room, "messages/"), {"text": "hello", "uuid": "c-1"})
    assert response.status_code == 201
    message = ChatMessage.objects.get()
    assert response.json() == {"id": message.pk, "user": {"username": "alice"}, "room": room.pk.hex,
                               "timestamp": message.date_created.timestamp(), "text": "hello",
                               "edited_at": None, "deleted": False, "reactions": []}
    assert message.client_uuid == "c-1"
    assert len(published) == 1


def test_post_message_to_a_hyphenated_room_id(as_alice, room):
    response = post(as_alice, room_url(str(room.pk), "messages/"), {"text": "hello"})
    assert response.status_code == 201
    assert response.json()["room"] == room.pk.hex


def test_post_message_without_a_uuid_is_stored_each_time(as_alice, room):
    for _ in range(2):
        assert post(as_alice, room_url(room, "messages/"), {"text": "again"}).status_code == 201
    assert ChatMessage.objects.count() == 2
    assert set(ChatMessage.objects.values_list("client_uuid", flat=True)) == {None}


def test_direct_message(login, alice, bob, published):
    response = post(login(alice), DIRECT_URL, {"to": "bob", "text": "psst", "uuid": "d-1"})
    assert response.status_code == 201
    room = ChatRoom.objects.get()
    assert room.is_direct and set(room.users.all()) == {alice, bob}
    assert response.json()["room"] == room.pk.hex
    assert response.json()["text"] == "psst"
    # The next one, from either side, goes to the same room.
    reply = post(token_client(bob), DIRECT_URL, {"to": "alice", "text": "yes?"})
    assert reply.json()["room"] == room.pk.hex
    assert ChatRoom.objects.count() == 1
    assert len(published) == 2


def test_mark_read(login, alice, bob, room):
    sent = add_messages(room, [bob], 5)
    response = post(login(alice), room_url(room, "read/"), {"message": sent[2].pk})
    assert response.status_code == 200
    assert response.json() == {"room": room.pk.hex, "last_read_id": sent[2].pk, "unread_count": 2}
    assert Membership.objects.get(room=room, user=alice).last_read_id == sent[2].pk


def test_mark_read_never_moves_back_nor_past_the_newest_message(as_alice, alice, bob, room):
    sent = add_messages(room, [bob], 3)
    url = room_url(room, "read/")
    assert post(as_alice, url, {"message": sent[1].pk}).json()["last_read_id"] == sent[1].pk
    assert post(as_alice, url, {"message": sent[0].pk}).json()["last_read_id"] == sent[1].pk
    assert post(as_alice, url, {"message": sent[-1].pk + 1000}).json() == {
        "room": room.pk.hex, "last_read_id": sent[-1].pk, "unread_count": 0}


# Retries: the client's uuid is the idempotency key, over REST and the WebSocket alike

def test_a_retry_with_the_same_uuid_stores_once_and_answers_the_stored_message(as_alice, room, published):
    url = room_url(room, "messages/")
    first = post(as_alice, url, {"text": "once", "uuid": "retry-1"})
    again = post(as_alice, url, {"text": "once", "uuid": "retry-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert ChatMessage.objects.count() == 1
    # Published again, as the worker does: a member who missed it gets it now. The first carries
    # the feed's cursor of the message stored; the retry stored nothing and carries none.
    first_reply = published[0][0]
    assert isinstance(first_reply.pop("cursor"), str)
    assert [response for response, _ in published] == [first_reply] * 2


def test_the_same_uuid_from_another_user_is_another_message(alice, bob, room):
    url = room_url(room, "messages/")
    assert post(token_client(alice), url, {"text": "a", "uuid": "same"}).status_code == 201
    assert post(token_client(bob), url, {"text": "b", "uuid": "same"}).status_code == 201
    assert ChatMessage.objects.count() == 2


def test_a_direct_message_retry_stores_once(as_alice, bob):
    first = post(as_alice, DIRECT_URL, {"to": "bob", "text": "once", "uuid": "dm-1"})
    again = post(as_alice, DIRECT_URL, {"to": "bob", "text": "once", "uuid": "dm-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert ChatMessage.objects.count() == 1


def worker_new_message(user, room: ChatRoom, text: str, client_uuid: str) -> dict[str, Any]:
    """A new_message frame as a worker answers it (the gateway's keys included)."""
    frame = {"uuid": client_uuid, "action": "new_message", "room": room.pk.hex, "text": text,
             "session_data": {"user_pk": user.pk}, "request_id": "gw:1", "reply_to": "gw"}
    return dispatch.handle(frame, "worker_response").envelope


def test_a_websocket_message_retried_over_rest_is_stored_once(as_alice, alice, room):
    over_websocket = worker_new_message(alice, room, "hi", "ws-1")
    assert over_websocket["type"] == "success_response"
    response = post(as_alice, room_url(room, "messages/"), {"text": "hi", "uuid": "ws-1"})
    assert response.status_code == 200
    assert response.json() == over_websocket["response"]["message"]
    assert ChatMessage.objects.count() == 1


def test_a_rest_message_retried_over_the_websocket_is_stored_once(as_alice, alice, room):
    response = post(as_alice, room_url(room, "messages/"), {"text": "hi", "uuid": "rest-1"})
    assert response.status_code == 201
    assert worker_new_message(alice, room, "hi", "rest-1")["response"]["message"] == response.json()
    assert ChatMessage.objects.count() == 1


# A room the user may not see: the same 404 as a room that does not exist

ROOM_REQUESTS = [
    ("get", "", None),
    ("post", "members/", {"members": ["carol"]}),
    ("post", "leave/", None),
    ("get", "messages/", None),
    ("post", "messages/", {"text": "hi"}),
    ("post", "read/", {"message": 0}),
]


@pytest.mark.parametrize("method, suffix, body", ROOM_REQUESTS)
def test_a_non_member_gets_the_answer_of_a_room_that_does_not_exist(carol, room, method, suffix, body, published):
    client = token_client(carol)
    answers = [getattr(client, method)(room_url(room_id, suffix), body, format="json")
               for room_id in (room.pk.hex, str(room.pk), uuid.uuid4().hex, "not-a-room", "ab" * 15 + "zz")]
    for response in answers:
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
        assert response.content == answers[0].content
    assert published == []
    assert room.users.count() == 2 and not ChatMessage.objects.exists()


def test_a_direct_room_takes_no_new_members(as_alice, alice, bob, carol):
    room = post(as_alice, DIRECT_URL, {"to": "bob", "text": "hi"}).json()["room"]
    response = post(as_alice, room_url(room, "members/"), {"members": ["carol"]})
    assert response.status_code == 404
    assert response.json()["error_code"] == "invalid_room_id"
    assert not ChatRoom.objects.get().users.filter(pk=carol.pk).exists()


# Bad input: 400 with the protocol's error code; nothing stored, nothing published

def assert_refused(response, code: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error_code", "error_message"}
    assert body["error_code"] == code
    assert body["error_message"]


# A body with a message's text, refused: by the posting of a message and by its edit alike.
TEXT_BODIES_REFUSED = [
    ({"text": ""}, "empty_text"),
    ({"text": " \n\t "}, "empty_text"),
    ({}, "invalid_message_format"),
    ({"text": None}, "invalid_message_format"),
    ({"text": 5}, "invalid_message_format"),
    ({"text": ["hi"]}, "invalid_message_format"),
    ({"text": "a\x00b"}, "invalid_message_format"),
    ({"text": "hi", "uuid": ""}, "invalid_message_format"),
    ({"text": "hi", "uuid": "u" * 65}, "invalid_message_format"),
    ({"text": "hi", "uuid": 7}, "invalid_message_format"),
    ([{"text": "hi"}], "invalid_message_format"),
    ("hi", "invalid_message_format"),
]


@pytest.mark.parametrize("body, code", TEXT_BODIES_REFUSED)
def test_post_message_refused(as_alice, room, body, code, published):
    assert_refused(post(as_alice, room_url(room, "messages/"), body), code)
    assert not ChatMessage.objects.exists()
    assert published == []


def test_message_length_limit(as_alice, room, settings):
    settings.CHAT = {**settings.CHAT, "MAX_MESSAGE_LENGTH": 10}
    url = room_url(room, "messages/")
    assert_refused(post(as_alice, url, {"text": "x" * 11}), "text_too_long")
    assert post(as_alice, url, {"text": "x" * 10, "uuid": "u" * 64}).status_code == 201
    assert_refused(post(as_alice, DIRECT_URL, {"to": "bob", "text": "x" * 11}), "text_too_long")


@pytest.mark.parametrize("body, code", [
    ({"to": "nobody", "text": "hi"}, "invalid_user"),
    ({"to": "alice", "text": "hi"}, "invalid_user"),  # oneself
    ({"to": "x" * 151, "text": "hi"}, "invalid_user"),
    ({"to": "bob", "text": ""}, "empty_text"),
    ({"text": "hi"}, "invalid_message_format"),
    ({"to": 5, "text": "hi"}, "invalid_message_format"),
    ({"to": "bob"}, "invalid_message_format"),
    ({"to": "bob", "text": "hi", "uuid": ""}, "invalid_message_format"),
])
def test_direct_message_refused(as_alice, bob, body, code, published):
    assert_refused(post(as_alice, DIRECT_URL, body), code)
    assert not ChatMessage.objects.exists() and not ChatRoom.objects.exists()
    assert published == []


def test_direct_message_to_an_inactive_user_is_refused(as_alice, make_user):
    make_user("gone", is_active=False)
    assert_refused(post(as_alice, DIRECT_URL, {"to": "gone", "text": "hi"}), "invalid_user")


@pytest.mark.parametrize("body, code", [
    ({"members": ["bob"]}, "invalid_message_format"),
    ({"name": "", "members": []}, "invalid_message_format"),
    ({"name": "   ", "members": []}, "invalid_message_format"),
    ({"name": 5, "members": []}, "invalid_message_format"),
    ({"name": "x" * 201, "members": []}, "invalid_message_format"),
    ({"name": "r", "members": "bob"}, "invalid_message_format"),
    ({"name": "r", "members": [1]}, "invalid_message_format"),
    ({"name": "r", "members": [""]}, "invalid_message_format"),
    ({"name": "r", "members": ["bob"] * 501}, "invalid_message_format"),
    ({"name": "r", "members": ["bob", "nobody"]}, "invalid_user"),
    ({"name": "r", "members": [], "uuid": "u" * 65}, "invalid_message_format"),
])
def test_create_room_refused(as_alice, bob, body, code, published):
    assert_refused(post(as_alice, ROOMS_URL, body), code)
    assert not ChatRoom.objects.exists()
    assert published == []


def test_create_room_limits(as_alice, bob):
    assert post(as_alice, ROOMS_URL, {"name": "x" * 200, "members": ["bob"] * 500}).status_code == 201


@pytest.mark.parametrize("body, code", [
    ({}, "invalid_message_format"),
    ({"members": "carol"}, "invalid_message_format"),
    ({"members": [None]}, "invalid_message_format"),
    ({"members": ["carol", "nobody"]}, "invalid_user"),
])
def test_add_members_refused(as_alice, carol, room, body, code, published):
    assert_refused(post(as_alice, room_url(room, "members/"), body), code)
    assert room.users.count() == 2
    assert published == []


@pytest.mark.parametrize("body", [{}, {"message": "5"}, {"message": -1}, {"message": True}, {"message": 1.5},
                                  {"message": None}, {"message": 1, "uuid": ""}])
def test_mark_read_refused(as_alice, room, body, published):
    assert_refused(post(as_alice, room_url(room, "read/"), body), "invalid_message_format")
    assert published == []


def test_leave_room_refuses_a_bad_uuid(as_alice, room):
    assert_refused(post(as_alice, room_url(room, "leave/"), {"uuid": 5}), "invalid_message_format")
    assert room.users.count() == 2


def test_malformed_json_gets_rest_frameworks_400(as_alice, room):
    response = as_alice.post(room_url(room, "messages/"), data='{"text": "hi"', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not ChatMessage.objects.exists()


def test_bodies_are_json_only(as_alice, room):
    response = as_alice.post(room_url(room, "messages/"), {"text": "hi"})  # a form
    assert response.status_code == 415
    assert not ChatMessage.objects.exists()


# Pagination of a room's messages

def walk(client: APIClient, url: str) -> list[list[int]]:
    """The ids of every page, following `next` links from `url`."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append([message["id"] for message in response.json()["results"]])
        url = response.json()["next"]
    return pages


def test_cursor_pagination_walks_every_message_newest_first_without_gaps_or_repeats(as_alice, alice, bob, room,
                                                                                   make_room):
    sent = add_messages(room, [alice, bob], 125)
    add_messages(make_room(alice, bob, name="other"), [alice], 10)  # not this room's
    pages = walk(as_alice, room_url(room, "messages/"))
    assert [len(page) for page in pages] == [50, 50, 25]
    assert [message_id for page in pages for message_id in page] == sorted((m.pk for m in sent), reverse=True)


def test_messages_posted_while_paging_back_neither_repeat_nor_shift_the_pages(as_alice, alice, bob, room):
    sent = add_messages(room, [alice, bob], 30)
    first = as_alice.get(room_url(room, "messages/") + "?page_size=10").json()
    add_messages(room, [bob], 5)  # arrive meanwhile: newer than every page still to come
    rest = walk(as_alice, first["next"])
    seen = [message["id"] for message in first["results"]] + [message_id for page in rest for message_id in page]
    assert seen == sorted((m.pk for m in sent), reverse=True)


def test_the_client_chooses_the_page_size_up_to_100(as_alice, alice, room):
    add_messages(room, [alice], 120)
    url = room_url(room, "messages/")
    assert len(as_alice.get(url + "?page_size=7").json()["results"]) == 7
    assert len(as_alice.get(url + "?page_size=100").json()["results"]) == 100
    assert len(as_alice.get(url + "?page_size=1000").json()["results"]) == 100
    assert len(as_alice.get(url + "?page_size=nonsense").json()["results"]) == 50


def test_previous_pages_come_back_the_same(as_alice, alice, room):
    add_messages(room, [alice], 12)
    url = room_url(room, "messages/") + "?page_size=5"
    first = as_alice.get(url).json()
    second = as_alice.get(first["next"]).json()
    assert as_alice.get(second["previous"]).json()["results"] == first["results"]


def test_a_forged_cursor_is_refused(as_alice, room):
    response = as_alice.get(room_url(room, "messages/") + "?cursor=bz14")  # base64 of "o=x": no offset
    assert (response.status_code, response.json()) == (404, {"detail": "Invalid cursor"})


def test_a_room_without_messages(as_alice, room):
    assert as_alice.get(room_url(room, "messages/")).json() == {"next": None, "previous": None, "results": []}


# Cost

def join_rooms(user, other, count: int) -> None:
    """`count` rooms of `user` and `other`, each with a message."""
    new_rooms = ChatRoom.objects.bulk_create([ChatRoom(name=f"room {i}") for i in range(count)])
    Membership.objects.bulk_create([Membership(room=room, user=member) for room in new_rooms
                                    for member in (user, other)])
    ChatMessage.objects.bulk_create([ChatMessage(room=room, user=other, text="hi") for room in new_rooms])


def test_listing_rooms_costs_the_same_queries_for_20_rooms_as_for_200(as_alice, alice, bob,
                                                                      django_assert_max_num_queries):
    join_rooms(alice, bob, 20)
    with CaptureQueriesContext(connection) as twenty:
        assert len(as_alice.get(ROOMS_URL).json()) == 20
    # The token, then chat.rooms' four: memberships with counts, last messages, their reactions, members.
    assert len(twenty) <= 5
    join_rooms(alice, bob, 180)
    with django_assert_max_num_queries(len(twenty)):
        assert len(as_alice.get(ROOMS_URL).json()) == 200
