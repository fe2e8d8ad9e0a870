"""Any user model: the names on the wire (CHAT["DISPLAY_NAME"], else the login name), users looked
up by their login name; a model that logs in by e-mail with no username field, in a fresh
interpreter; and the chat page in a product's own layout (CHAT["BASE_TEMPLATE"])."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from chat import statements as chat_statements
from chat.conf import check
from chat.serializers import MessageSerializer, UserSerializer, message_data
from chat.models import ChatMessage
from workers import dispatch

ROOT = Path(__file__).resolve().parents[2]

# WhiteNoise warns that STATIC_ROOT does not exist before `collectstatic`; not the page's business.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")


def shouted(user) -> str:
    return user.username.upper()


def send(action: str, user=None, online=None, **fields: Any) -> dict[str, Any]:
    request = {"uuid": uuid.uuid4().hex, "action": action, **fields,
               "session_data": {"user_pk": user.pk} if user is not None else None,
               "request_id": "gateway-1:42", "reply_to": "gateway-1-replies"}
    return dispatch.handle(request, "worker_response", online).envelope["response"]


def statements(captured: CaptureQueriesContext) -> list[str]:
    """The statements run, without the savepoints of the test's transaction."""
    return [query["sql"] for query in captured.captured_queries if "SAVEPOINT" not in query["sql"].upper()]


def names(members: list[dict[str, str]]) -> list[str]:
    return [member["username"] for member in members]


def test_a_model_that_logs_in_by_email_with_no_username_field():
    # AUTH_USER_MODEL is fixed for a process: its checks run in a fresh one, on a database in memory.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/email_users/check_email_users.py", "-p", "no:cacheprovider", "-q"],
        capture_output=True, text=True, cwd=ROOT, timeout=170,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
             "DJANGO_SETTINGS_MODULE": "tests.email_users.settings"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"^5 passed", result.stdout, re.MULTILINE), result.stdout[-2000:]


@pytest.mark.parametrize("value", [5, "nodots", ["a.b"]])
def test_display_name_is_a_dotted_path_or_a_callable(value):
    with pytest.raises(ImproperlyConfigured, match=r"CHAT\['DISPLAY_NAME'\] must be a dotted path"):
        check({"DISPLAY_NAME": value})
    assert check({"DISPLAY_NAME": shouted})["DISPLAY_NAME"] is shouted


def test_without_display_name_users_go_by_their_login_name(alice, bob, make_room):
    room = make_room(alice, bob)
    reply = send("new_message", alice, room=room.pk.hex, text="hi")
    assert reply["message"]["user"] == {"username": "alice"}
    assert names(send("list_rooms", bob)["rooms"][0]["members"]) == ["alice", "bob"]


@pytest.mark.parametrize("display_name", [shouted, "tests.chat.test_user_models.shouted"])
def test_display_name_names_users_on_the_wire_at_the_same_cost(settings, alice, bob, make_room, display_name):
    settings.CHAT = {**settings.CHAT, "DISPLAY_NAME": display_name}
    room = make_room(alice, bob)
    token = Token.objects.get(user=alice).key
    with CaptureQueriesContext(connection) as captured:
        assert send("authenticate", token=token)["user"] == {"username": "ALICE"}
    assert len(statements(captured)) == 1
    with CaptureQueriesContext(connection) as captured:
        posted = send("new_message", bob, room=room.pk.hex, text="hi")
    assert posted["message"]["user"] == {"username": "BOB"}
    assert len(statements(captured)) == 1 + chat_statements.insert_statements()
    assert names(send("list_rooms", alice)["rooms"][0]["members"]) == ["ALICE", "BOB"]
    assert send("who_is_online", alice, online=lambda ids: set(ids), room=room.pk.hex)["online"] == ["ALICE", "BOB"]
    assert send("typing", bob, room=room.pk.hex)["user"] == {"username": "BOB"}
    message = ChatMessage.objects.select_related("user").get(text="hi")
    assert message_data(message) == MessageSerializer(message).data
    assert UserSerializer(alice).data == {"username": "ALICE"}


def test_with_display_name_requests_still_name_users_by_login_name(settings, alice, bob):
    settings.CHAT = {**settings.CHAT, "DISPLAY_NAME": shouted}
    created = send("create_room", alice, name="Team", members=["bob"])
    assert names(created["room"]["members"]) == ["ALICE", "BOB"]
    assert send("create_room", alice, name="Team", members=["BOB"])["error_code"] == "invalid_user"
    direct = send("direct_message", alice, to="bob", text="psst")
    assert direct["message"]["user"] == {"username": "ALICE"}
    assert send("direct_message", alice, to="BOB", text="psst")["error_code"] == "invalid_user"


def test_a_deactivated_user_is_refused_whatever_the_display_name(settings, alice, make_user):
    settings.CHAT = {**settings.CHAT, "DISPLAY_NAME": shouted}
    make_user("gone", is_active=False)
    assert send("direct_message", alice, to="gone", text="hi")["error_code"] == "invalid_user"
    assert send("create_room", alice, name="Team", members=["gone"])["error_code"] == "invalid_user"


def page_config(page) -> dict[str, Any]:
    text = page.content.decode()
    start = text.index('<script id="chat-config" type="application/json">') + len(
        '<script id="chat-config" type="application/json">')
    return json.loads(text[start:text.index("</script>", start)])


def test_the_page_names_the_user_by_the_display_name(settings, client, alice):
    settings.CHAT = {**settings.CHAT, "DISPLAY_NAME": shouted}
    client.force_login(alice)
    page = client.get("/")
    assert page_config(page)["username"] == "ALICE"
    assert "Signed in as <strong>ALICE</strong>" in page.content.decode()


def test_the_page_sits_in_the_chat_s_own_base_by_default(client, alice):
    client.force_login(alice)
    page = client.get("/")
    html = page.content.decode()
    assert [template.name for template in page.templates][:2] == ["chat/index.html", "chat/base.html"]
    assert html.index('href="/static/chat/chat.css"') < html.index("</head>") < html.index('id="app"')
    assert "<title>Chat</title>" in html and "Example product" not in html


def test_the_page_sits_in_the_products_layout(settings, client, alice):
    settings.CHAT = {**settings.CHAT, "BASE_TEMPLATE": "example_app/layout.html"}
    client.force_login(alice)
    page = client.get("/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "chat/base.html" not in [template.name for template in page.templates]
    # The product's own head and navigation, the chat's stylesheet added to the head, the chat in the body.
    head = html[:html.index("</head>")]
    assert 'href="/static/example_app/product.css"' in head and 'href="/static/chat/chat.css"' in head
    assert "<title>Chat · Example product</title>" in head
    assert html.index("Example product layout") < html.index('id="app"') < html.index('id="chat-config"')
    assert page_config(page)["username"] == "alice"
    assert "Content-Security-Policy" in page
