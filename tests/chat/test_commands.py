"""The chat's management commands: `chat_fixtures` (bulk test data as JSON), `chat_demo` and
`prune_changes`."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from django.utils import timezone

from chat import feed, services
from chat.management.commands import prune_changes
from chat.management.commands.chat_demo import DEMO_PASSWORD, DEMO_ROOMS, DEMO_USERS
from chat.models import ChatChange, ChatMessage, ChatRoom

User = get_user_model()


def run_fixtures(*args: str) -> dict:
    out = StringIO()
    call_command("chat_fixtures", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db
class TestChatFixtures:
    def test_output_has_the_documented_shape(self):
        output = run_fixtures("--users", "6", "--rooms", "3", "--room-size", "4")
        assert set(output) == {"users", "rooms"}
        assert len(output["users"]) == 6
        assert len(output["rooms"]) == 3
        for user in output["users"]:
            assert set(user) == {"id", "username", "token"}
            assert isinstance(user["id"], int)
            assert isinstance(user["username"], str)
            assert isinstance(user["token"], str)
        user_ids = {user["id"] for user in output["users"]}
        for room in output["rooms"]:
            assert set(room) == {"id", "name", "members"}
            assert re.fullmatch(r"[0-9a-f]{32}", room["id"])
            assert isinstance(room["name"], str)
            assert len(room["members"]) == 4
            assert len(set(room["members"])) == 4
            assert set(room["members"]) <= user_ids

    def test_tokens_belong_to_their_users(self):
        output = run_fixtures("--users", "5")
        for user in output["users"]:
            token = Token.objects.select_related("user").get(key=user["token"])
            assert token.user.pk == user["id"]
            assert token.user.username == user["username"]

    def test_rooms_are_stored_with_their_members(self):
        output = run_fixtures("--users", "8", "--rooms", "4", "--room-size", "3")
        for room in output["rooms"]:
            stored = ChatRoom.objects.get(pk=room["id"])
            assert stored.name == room["name"]
            assert set(stored.users.values_list("pk", flat=True)) == set(room["members"])

    def test_no_rooms_by_default(self):
        output = run_fixtures("--users", "2")
        assert output["rooms"] == []
        assert not ChatRoom.objects.exists()

    def test_prefix_names_the_users(self):
        output = run_fixtures("--users", "3", "--prefix", "load")
        assert [user["username"] for user in output["users"]] == ["load_1", "load_2", "load_3"]

    def test_runs_without_a_prefix_never_clash(self):
        first = run_fixtures("--users", "3")
        second = run_fixtures("--users", "3")
        names = [user["username"] for user in first["users"] + second["users"]]
        assert len(set(names)) == 6
        assert User.objects.count() == 6

    def test_seed_makes_the_member_choice_repeatable(self):
        def member_positions(output: dict) -> list[list[int]]:
            position = {user["id"]: n for n, user in enumerate(output["users"])}
            return [[position[pk] for pk in room["members"]] for room in output["rooms"]]

        first = run_fixtures("--users", "20", "--rooms", "5", "--room-size", "4", "--seed", "7")
        second = run_fixtures("--users", "20", "--rooms", "5", "--room-size", "4", "--seed", "7")
        assert member_positions(first) == member_positions(second)

    def test_room_places_go_round_robin(self):
        output = run_fixtures("--users", "4", "--rooms", "4", "--room-size", "1")
        assert sorted(room["members"][0] for room in output["rooms"]) == sorted(u["id"] for u in output["users"])

    def test_two_thousand_users(self):
        output = run_fixtures("--users", "2000", "--rooms", "50", "--room-size", "10")
        assert len(output["users"]) == 2000
        assert len(output["rooms"]) == 50
        assert all(len(room["members"]) == 10 for room in output["rooms"])
        assert User.objects.count() == 2000
        assert Token.objects.count() == 2000
        assert ChatRoom.objects.count() == 50
        assert ChatRoom.users.through.objects.count() == 500

    @pytest.mark.parametrize("args", [
        [],
        ["--users", "0"],
        ["--users", "-3"],
        ["--users", "5", "--rooms", "-1"],
        ["--users", "5", "--rooms", "2", "--room-size", "0"],
        ["--users", "5", "--rooms", "2", "--room-size", "6"],
        ["--users", "many"],
    ])
    def test_bad_arguments(self, args):
        with pytest.raises(CommandError):
            call_command("chat_fixtures", *args, stdout=StringIO())
        assert not User.objects.exists()

    def test_a_prefix_already_used_is_refused_and_adds_nothing(self):
        run_fixtures("--users", "2", "--prefix", "taken")
        with pytest.raises(CommandError, match="taken"):
            run_fixtures("--users", "3", "--rooms", "1", "--prefix", "taken")
        assert User.objects.count() == 2
        assert not ChatRoom.objects.exists()


@pytest.fixture
def fast_hasher(settings):
    # chat_demo sets real passwords; a fast hasher keeps the test quick.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.mark.django_db
@pytest.mark.usefixtures("fast_hasher")
class TestChatDemo:
    def test_creates_users_with_tokens_and_rooms(self):
        call_command("chat_demo", stdout=StringIO())
        assert sorted(User.objects.values_list("username", flat=True)) == sorted(DEMO_USERS)
        assert Token.objects.filter(user__username__in=DEMO_USERS).count() == len(DEMO_USERS)
        for name, members in DEMO_ROOMS.items():
            room = ChatRoom.objects.get(name=name)
            assert sorted(room.users.values_list("username", flat=True)) == sorted(members)
            assert room.messages.count() == 1

    def test_is_idempotent(self):
        call_command("chat_demo", stdout=StringIO())
        tokens = dict(Token.objects.values_list("user__username", "key"))
        call_command("chat_demo", stdout=StringIO())
        assert User.objects.count() == 3
        assert ChatRoom.objects.count() == len(DEMO_ROOMS)
        assert ChatMessage.objects.count() == len(DEMO_ROOMS)
        assert dict(Token.objects.values_list("user__username", "key")) == tokens

    def test_users_log_in_with_the_documented_password(self, client):
        out = StringIO()
        call_command("chat_demo", stdout=out)
        assert DEMO_PASSWORD in out.getvalue()
        for username in DEMO_USERS:
            assert client.login(username=username, password=DEMO_PASSWORD)
            client.logout()
        assert not client.login(username="alice", password="wrong")


def changes_aged(room, author, *days: int) -> None:
    """A change made `days` ago for each of `days` (a message posted then)."""
    for age in days:
        posted = services.post_message(author, room.pk.hex, f"{age} days old", None)
        ChatChange.objects.filter(message_id=posted.message.pk).update(
            at=timezone.now() - datetime.timedelta(days=age, minutes=1))


class TestPruneChanges:
    @pytest.mark.django_db
    def test_deletes_the_changes_older_than_the_retention_and_says_how_many(self, settings, room, alice):
        settings.CHAT = {**settings.CHAT, "SYNC_RETENTION_DAYS": 7}
        changes_aged(room, alice, 9, 8, 6)
        out = StringIO()
        call_command("prune_changes", stdout=out)
        assert re.fullmatch(r"pruned 2 changes made before \S+ \(SYNC_RETENTION_DAYS=7\)\n", out.getvalue())
        assert sorted(ChatChange.objects.values_list("message__text", flat=True)) == ["6 days old"]

    @pytest.mark.django_db
    def test_the_retention_is_30_days_unless_said(self, settings, monkeypatch, room, alice):
        monkeypatch.delenv("SYNC_RETENTION_DAYS", raising=False)
        settings.CHAT = {}
        changes_aged(room, alice, 31, 29)
        out = StringIO()
        call_command("prune_changes", stdout=out)
        assert "pruned 1 changes" in out.getvalue() and "(SYNC_RETENTION_DAYS=30)" in out.getvalue()

    @pytest.mark.parametrize("every", ["0", "0.5", "-1", "inf", "nan"])
    def test_every_is_a_number_of_seconds_of_at_least_one(self, every):
        with pytest.raises(CommandError, match="--every"):
            call_command("prune_changes", "--every", every)

    @pytest.mark.django_db(transaction=True)
    def test_every_runs_again_after_the_wait_and_sigterm_in_a_wait_ends_it(self, monkeypatch, room, alice):
        changes_aged(room, alice, 40)
        runs: list[int] = []
        real_prune = feed.prune
        waits: list[float] = []

        def prune(before):
            pruned = real_prune(before)
            runs.append(pruned.changes)
            return pruned

        def sleep(seconds: float) -> None:
            # The second wait gets SIGTERM: the command ends at once, not an hour later.
            waits.append(seconds)
            if len(waits) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                changes_aged(room, alice, 50)

        monkeypatch.setattr(feed, "prune", prune)
        monkeypatch.setattr(prune_changes.time, "sleep", sleep)
        before = signal.getsignal(signal.SIGTERM)
        out = StringIO()
        call_command("prune_changes", "--every", "3600", stdout=out)
        assert runs == [1, 1] and waits == [3600, 3600]
        assert out.getvalue().count("pruned 1 changes") == 2
        assert signal.getsignal(signal.SIGTERM) is before

    @pytest.mark.django_db(transaction=True)
    def test_sigterm_during_a_run_lets_it_finish_and_ends_the_command(self, monkeypatch, room, alice):
        changes_aged(room, alice, 40)
        real_prune = feed.prune

        def prune(before):
            os.kill(os.getpid(), signal.SIGTERM)
            return real_prune(before)

        monkeypatch.setattr(feed, "prune", prune)
        monkeypatch.setattr(prune_changes.time, "sleep", lambda seconds: pytest.fail("waited after SIGTERM"))
        out = StringIO()
        call_command("prune_changes", "--every", "3600", stdout=out)
        assert out.getvalue().startswith("pruned 1 changes") and not ChatChange.objects.exists()
