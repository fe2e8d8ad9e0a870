"""The models and the committed migrations agree."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations():
    out = StringIO()
    # --check exits with status 1 (SystemExit) when a migration is missing.
    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=StringIO())
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_memberships_made_before_the_through_model_survive_it():
    """0002 moves the members' table under the Membership model: the rows stay, each read up to 0."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("chat", "0001_initial")])
    old = executor.loader.project_state([("chat", "0001_initial")]).apps
    user = old.get_model("auth", "User").objects.create(username="old-timer")
    room = old.get_model("chat", "ChatRoom").objects.create(name="old room")
    room.users.add(user)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    from chat.models import ChatRoom, Membership

    membership = Membership.objects.get(room_id=room.pk, user_id=user.pk)
    assert membership.last_read_id == 0
    assert ChatRoom.objects.get(pk=room.pk).direct_key is None
    assert list(ChatRoom.objects.get(pk=room.pk).users.values_list("username", flat=True)) == ["old-timer"]


def _message_indexes(connection) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "chat_chatmessage")
    # Unique constraints count: they are indexes too (SQLite reports them as constraints only).
    return {name: info["columns"] for name, info in constraints.items()
            if (info["index"] or info["unique"]) and not info["primary_key"]}


@pytest.mark.django_db(transaction=True)
def test_messages_lose_the_indexes_that_others_lead_and_get_them_back_on_the_way_down():
    """0003 drops the lone `user_id` and `room_id` indexes (each leads another), and only them."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("chat", "0002_membership_direct_key")], [("chat", "0003_message_indexes_led_by_others")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = _message_indexes(connection)
    assert ["user_id"] in old.values() and ["room_id"] in old.values()

    MigrationExecutor(connection).migrate(after)
    new = _message_indexes(connection)
    assert sorted(new.values()) == sorted(columns for columns in old.values() if columns not in (["user_id"], ["room_id"]))
    # What took over: an index led by each column.
    assert any(columns[0] == "user_id" for columns in new.values())
    assert any(columns[0] == "room_id" for columns in new.values())

    MigrationExecutor(connection).migrate(before)
    assert sorted(_message_indexes(connection).values()) == sorted(old.values())
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
