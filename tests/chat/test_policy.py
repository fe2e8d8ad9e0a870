"""The permission policy (chat.policy, CHAT["POLICY"]): loaded once per configured value, refused
at start when wrong; its refusals over the REST API, `403 forbidden` with nothing stored; the
default allows everything and costs no query. Over the workers: tests/workers/test_dispatch_policy.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import policy, services, statements
from chat.conf import check
from chat.models import ChatMessage, ChatRoom, Membership
from tests.chat import policies

from .test_api import DIRECT_URL, NOT_FOUND, ROOMS_URL, post, room_url, token_client

pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"error_code": "forbidden", "error_message": "Not allowed"}


@pytest.fixture
def use_policy(settings):
    def use(value) -> None:
        settings.CHAT = {**settings.CHAT, "POLICY": value}

    return use


@pytest.fixture
def recording(use_policy) -> list:
    policies.Recording.asked.clear()
    use_policy("tests.chat.policies.Recording")
    yield policies.Recording.asked
    policies.Recording.asked.clear()


# Loading

def test_the_default_allows_everything_and_reads_nothing(alice, bob, room, django_assert_num_queries):
    with django_assert_num_queries(0):
        default = policy.current()
        assert type(default) is policy.Policy
        assert default.can_post(alice, statements.room(room.pk))
        assert default.can_create_room(alice, [bob])
        assert default.can_add_members(alice, room, [bob])
        assert default.can_direct_message(alice, bob)


def test_loaded_once_and_again_when_the_setting_changes(use_policy):
    assert policy.current() is policy.current()
    use_policy("tests.chat.policies.NoPosting")
    assert type(policy.current()) is policies.NoPosting
    assert policy.current() is policy.current()
    use_policy(policies.NoDirectMessages)  # the class itself
    assert type(policy.current()) is policies.NoDirectMessages
    use_policy("chat.policy.Policy")
    assert type(policy.current()) is policy.Policy


@pytest.mark.parametrize("value", [42, None, "Policy", "", policy.Policy()])
def test_a_value_neither_a_path_nor_a_class_is_refused(value):
    named = r"CHAT\['POLICY'\] must be a dotted path \(module.Class\) or a class"
    with pytest.raises(ImproperlyConfigured, match=named):
        check({"POLICY": value})


@pytest.mark.parametrize("value, named", [
    ("tests.chat.policies.Missing", r"CHAT\['POLICY'\] 'tests.chat.policies.Missing' cannot be imported"),
    ("no_such_module.Policy", r"CHAT\['POLICY'\] 'no_such_module.Policy' cannot be imported"),
    ("tests.chat.policies.NOT_A_CLASS", r"CHAT\['POLICY'\] must name a class"),
    (policies.Incomplete, r"CHAT\['POLICY'\] Incomplete lacks \['can_create_room', 'can_add_members', "
                          r"'can_direct_message'\]"),
])
def test_a_policy_that_cannot_be_loaded_is_named(value, named):
    with pytest.raises(ImproperlyConfigured, match=named):
        policy.load(value)


@pytest.mark.parametrize("value, named", [
    ("'tests.chat.policies.Missing'", "CHAT['POLICY'] 'tests.chat.policies.Missing' cannot be imported"),
    ("42", "CHAT['POLICY'] must be a dotted path (module.Class) or a class, not 42"),
])
def test_a_project_with_a_wrong_policy_does_not_start(tmp_path, value, named):
    # The policy is loaded when the app starts (ChatConfig.ready), in a fresh interpreter.
    (tmp_path / "bad_settings.py").write_text(f"from tests.settings import *  # noqa\nCHAT = {{'POLICY': {value}}}\n")
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True,
                            env={"PATH": "", "PYTHONPATH": f"{tmp_path}:{ROOT}",
                                 "DJANGO_SETTINGS_MODULE": "bad_settings"}, timeout=60)
    assert result.returncode != 0
    assert named in result.stderr


# What each decision is given

def test_each_decision_gets_the_user_and_the_objects_at_hand(alice, bob, carol, room, recording):
    client = token_client(alice)
    assert post(client, room_url(room, "messages/"), {"text": "hi"}).status_code == 201
    assert post(client, ROOMS_URL, {"name": "new", "members": ["bob", "alice"]}).status_code == 201
    assert post(client, room_url(room, "members/"), {"members": ["carol"]}).status_code == 200
    assert post(client, DIRECT_URL, {"to": "bob", "text": "hi"}).status_code == 201
    assert [asked[0] for asked in recording] == ["can_post", "can_create_room", "can_add_members",
                                                 "can_direct_message"]
    posted, created, added, direct = recording
    assert posted[1] == alice and posted[2].pk == room.pk
    assert created[1:] == (alice, [bob])  # the creator is not among the members named
    assert added[1:] == (alice, room, [carol])
    assert direct[1:] == (alice, bob)


def test_a_batch_asks_for_each_message_with_its_sender_and_room(alice, bob, room, recording,
                                                                django_assert_num_queries):
    posts = [services.Post(user.pk, room.pk.hex, "hi", f"uuid-{n}") for n, user in enumerate([alice, bob, alice])]
    services.post_messages_as(posts)
    assert [(name, user.pk, asked_room.pk) for name, user, asked_room in recording] == \
        [("can_post", alice.pk, room.pk), ("can_post", bob.pk, room.pk), ("can_post", alice.pk, room.pk)]
    # The room is given by its id alone, one instance for the room's messages: a field a policy
    # reads is a query, once.
    given = recording[0][2]
    assert given is recording[2][2]
    with django_assert_num_queries(1):
        assert given.name == "General"
    with django_assert_num_queries(0):
        assert recording[2][2].name == "General"


def test_the_default_adds_no_query_to_a_batch(alice, bob, room, use_policy):
    use_policy(policy.Policy)
    posts = [services.Post(user.pk, room.pk.hex, "hi", f"uuid-{n}") for n, user in enumerate([alice, bob, alice])]
    with CaptureQueriesContext(connection) as queries:
        outcomes = services.post_messages_as(posts)
    sql = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"].upper()]
    assert len(sql) == 1 + statements.insert_statements(), sql  # the members, the insert
    assert all(isinstance(outcome, services.PostedMessage) for outcome in outcomes)


# Refusals over the REST API: 403, the error body, nothing stored or published

def test_posting_refused(alice, room, use_policy, published):
    use_policy("tests.chat.policies.NoPosting")
    response = post(token_client(alice), room_url(room, "messages/"), {"text": "hi", "uuid": "u-1"})
    assert (response.status_code, response.json()) == (403, FORBIDDEN)
    assert not ChatMessage.objects.exists()
    assert published == []


def test_posting_checks_membership_and_text_before_the_policy(alice, carol, room, use_policy):
    use_policy("tests.chat.policies.NoPosting")
    response = post(token_client(carol), room_url(room, "messages/"), {"text": "hi"})
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    response = post(token_client(alice), room_url(room, "messages/"), {"text": "  "})
    assert (response.status_code, response.json()["error_code"]) == (400, "empty_text")


def test_a_direct_message_refused_makes_no_room(alice, bob, use_policy, published):
    use_policy("tests.chat.policies.NoDirectMessages")
    response = post(token_client(alice), DIRECT_URL, {"to": "bob", "text": "hi"})
    assert (response.status_code, response.json()) == (403, FORBIDDEN)
    assert not ChatRoom.objects.exists() and not ChatMessage.objects.exists()
    assert published == []
    response = post(token_client(alice), DIRECT_URL, {"to": "nobody", "text": "hi"})
    assert (response.status_code, response.json()["error_code"]) == (400, "invalid_user")


def test_creating_a_room_refused(alice, bob, use_policy, published):
    use_policy("tests.chat.policies.NoNewRooms")
    response = post(token_client(alice), ROOMS_URL, {"name": "new", "members": ["bob"]})
    assert (response.status_code, response.json()) == (403, FORBIDDEN)
    assert not ChatRoom.objects.exists() and not Membership.objects.exists()
    assert published == []


def test_adding_members_refused(alice, carol, room, use_policy, published):
    use_policy("tests.chat.policies.NoNewMembers")
    before = set(Membership.objects.values_list("room_id", "user_id"))
    response = post(token_client(alice), room_url(room, "members/"), {"members": ["carol"]})
    assert (response.status_code, response.json()) == (403, FORBIDDEN)
    assert set(Membership.objects.values_list("room_id", "user_id")) == before
    assert published == []
    response = post(token_client(carol), room_url(room, "members/"), {"members": ["carol"]})
    assert (response.status_code, response.json()) == (404, NOT_FOUND)


def test_the_default_allows_what_the_rules_allow(alice, bob, carol, room):
    client = token_client(alice)
    assert post(client, room_url(room, "messages/"), {"text": "hi"}).status_code == 201
    assert post(client, ROOMS_URL, {"name": "new", "members": ["bob"]}).status_code == 201
    assert post(client, room_url(room, "members/"), {"members": ["carol"]}).status_code == 200
    assert post(client, DIRECT_URL, {"to": "bob", "text": "hi"}).status_code == 201


def test_the_schema_names_the_403_of_each_endpoint_the_policy_decides(client):
    schema = client.get("/api/schema/?format=json").json()
    with_403 = {(path, method) for path, operations in schema["paths"].items()
                for method, operation in operations.items()
                if isinstance(operation, dict) and "403" in operation.get("responses", {})}
    assert with_403 == {("/api/rooms/", "post"), ("/api/rooms/{room_id}/members/", "post"),
                        ("/api/rooms/{room_id}/messages/", "post"), ("/api/direct-messages/", "post")}


def test_a_policy_decides_only_what_its_class_overrides():
    from chat.policy import Policy, decides

    class NoPosting(Policy):
        def can_post(self, user, room):
            return False

    assert not decides(Policy(), "can_post")
    assert decides(NoPosting(), "can_post") and not decides(NoPosting(), "can_direct_message")
