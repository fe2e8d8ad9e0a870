"""The chat with a user model that logs in by e-mail and has no username field.

Run in a fresh interpreter by tests/chat/test_user_models.py, with
DJANGO_SETTINGS_MODULE=tests.email_users.settings (AUTH_USER_MODEL is fixed for a process); not
named test_*, so that the suite's own run does not collect it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test.utils import CaptureQueriesContext
from django.db import connection
from rest_framework.authtoken.models import Token

from chat.models import ChatMessage, ChatRoom
from chat.serializers import MessageSerializer, UserSerializer, message_data
from chat.statements import insert_statements
from workers import dispatch

# WhiteNoise warns that STATIC_ROOT does not exist before `collectstatic`; not the page's business.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

REPLY_TO = "gateway-1-replies"
DISPLAY_NAME = "tests.email_users.names.full_name"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


@pytest.fixture
def users(db) -> dict[str, Any]:
    User = get_user_model()
    assert User.USERNAME_FIELD == "email"
    assert not any(field.name == "username" for field in User._meta.get_fields())
    made = {email: User.objects.create_user(email, full_name=name, is_active=active)
            for email, name, active in [(ALICE, "Alice Liddell", True), (BOB, "Bob Dylan", True),
                                        (CAROL, "Carol Gone", False)]}
    for user in made.values():
        Token.objects.create(user=user)
    return made


@pytest.fixture
def display_names(settings):
    settings.CHAT = {**settings.CHAT, "DISPLAY_NAME": DISPLAY_NAME}


def send(action: str, user=None, online=None, **fields: Any) -> dict[str, Any]:
    """The reply (or error) a worker answers a bus request with, through dispatch.handle."""
    request = {"uuid": uuid.uuid4().hex, "action": action, **fields,
               "session_data": {"user_pk": user.pk} if user is not None else None,
               "request_id": "gateway-1:42", "reply_to": REPLY_TO}
    outgoing = dispatch.handle(request, "worker_response", online)
    assert json.loads(outgoing.encode()) == outgoing.envelope
    return outgoing.envelope["response"]


def statements(captured: CaptureQueriesContext) -> list[str]:
    """The statements run, without the savepoints of the test's transaction."""
    return [query["sql"] for query in captured.captured_queries if "SAVEPOINT" not in query["sql"].upper()]


def names(members: list[dict[str, str]]) -> list[str]:
    return [member["username"] for member in members]


def test_authenticate_names_the_user_by_email(users):
    token = Token.objects.get(user=users[ALICE]).key
    with CaptureQueriesContext(connection) as captured:
        reply = send("authenticate", token=token)
    assert reply["status"] == "success" and reply["user"] == {"username": ALICE}
    assert len(statements(captured)) == 1
    assert send("authenticate", token=Token.objects.get(user=users[CAROL]).key)["error_code"] == "invalid_token"


def test_rooms_and_messages_name_users_by_email(users):
    alice, bob = users[ALICE], users[BOB]
    created = send("create_room", alice, name="Team", members=[BOB])
    assert created["status"] == "success" and names(created["room"]["members"]) == [ALICE, BOB]
    room = created["room"]["id"]
    with CaptureQueriesContext(connection) as captured:
        posted = send("new_message", bob, room=room, text="hello")
    assert len(statements(captured)) == 1 + insert_statements()  # the members with their accounts, the insert
    assert posted["message"]["user"] == {"username": BOB}
    direct = send("direct_message", alice, to=BOB, text="psst")
    assert direct["status"] == "success" and direct["message"]["user"] == {"username": ALICE}
    assert ChatRoom.objects.get(pk=direct["room"]).name == f"{ALICE}, {BOB}"
    listed = send("list_rooms", bob)["rooms"]
    assert [names(listed_room["members"]) for listed_room in listed] == [[ALICE, BOB], [ALICE, BOB]]
    assert listed[1]["last_message"]["user"] == {"username": BOB}
    assert send("who_is_online", alice, online=lambda ids: set(ids), room=room)["online"] == [ALICE, BOB]
    assert send("typing", alice, room=room)["user"] == {"username": ALICE}
    assert send("leave_room", bob, room=room)["user"] == {"username": BOB}
    message = ChatMessage.objects.select_related("user").get(text="hello")
    assert message_data(message) == MessageSerializer(message).data
    assert UserSerializer(alice).data == {"username": ALICE}


def test_a_deactivated_or_unknown_user_is_refused(users):
    alice = users[ALICE]
    assert send("create_room", alice, name="Team", members=[CAROL])["error_code"] == "invalid_user"
    assert send("direct_message", alice, to=CAROL, text="hi")["error_code"] == "invalid_user"
    assert send("create_room", alice, name="Team", members=["Bob Dylan"])["error_code"] == "invalid_user"
    room = send("create_room", alice, name="Team")["room"]["id"]
    assert send("add_members", alice, room=room, members=[CAROL])["error_code"] == "invalid_user"
    assert not ChatRoom.objects.filter(name="Team", users=users[CAROL]).exists()


def test_with_display_name_users_show_by_it_and_are_named_by_email(users, display_names):
    alice, bob = users[ALICE], users[BOB]
    token = Token.objects.get(user=alice).key
    with CaptureQueriesContext(connection) as captured:
        reply = send("authenticate", token=token)
    assert reply["user"] == {"username": "Alice Liddell"} and len(statements(captured)) == 1
    created = send("create_room", alice, name="Team", members=[BOB])
    assert names(created["room"]["members"]) == ["Alice Liddell", "Bob Dylan"]
    room = created["room"]["id"]
    # The display name's function reads the full user: the statements load it, no query more.
    with CaptureQueriesContext(connection) as captured:
        posted = send("new_message", bob, room=room, text="hello")
    assert posted["message"]["user"] == {"username": "Bob Dylan"} and len(statements(captured)) == 1 + insert_statements()
    direct = send("direct_message", bob, to=ALICE, text="psst")
    assert direct["message"]["user"] == {"username": "Bob Dylan"}
    assert ChatRoom.objects.get(pk=direct["room"]).name == "Alice Liddell, Bob Dylan"
    assert send("direct_message", bob, to="Alice Liddell", text="x")["error_code"] == "invalid_user"
    listed = send("list_rooms", alice)["rooms"]
    assert [names(listed_room["members"]) for listed_room in listed] == [["Alice Liddell", "Bob Dylan"]] * 2
    assert send("who_is_online", alice, online=lambda ids: set(ids), room=room)["online"] == [
        "Alice Liddell", "Bob Dylan"]
    message = ChatMessage.objects.select_related("user").get(text="hello")
    assert message_data(message) == MessageSerializer(message).data == {**message_data(message),
                                                                          "user": {"username": "Bob Dylan"}}


def test_the_chat_page_and_the_fixtures(users, client, capsys):
    client.force_login(users[ALICE])
    page = client.get("/")
    assert page.status_code == 200 and page.context["config"]["username"] == ALICE
    call_command("chat_fixtures", "--users", "2", "--rooms", "1", "--room-size", "2", "--prefix", "fx")
    output = json.loads(capsys.readouterr().out)
    assert [user["username"] for user in output["users"]] == ["fx_1", "fx_2"]
