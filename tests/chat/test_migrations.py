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
