"""Shared test set-up: the `.run` directory that holds the SQLite test database, model factories, and the users and room most tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent

# project/settings.py puts the SQLite test database in .run/; it must exist before the
# database is created, which happens before any fixture runs.
(ROOT / ".run").mkdir(exist_ok=True)


@pytest.fixture(autouse=True)
def fresh_throttles() -> None:
    """Each test starts with no REST API request counted against a throttle: they live in the
    process's cache, and tests of one process reuse user ids and the client address."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def make_user(db) -> Callable:
    """Create a user (unusable password: no hashing cost) with a REST framework token."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    def make(username: str, *, is_active: bool = True):
        user = get_user_model().objects.create_user(username=username, is_active=is_active)
        Token.objects.create(user=user)
        return user

    return make


@pytest.fixture
def make_room(db) -> Callable:
    """Create a chat room with the given members."""
    from chat.models import ChatRoom

    def make(*members, name: str = "room"):
        room = ChatRoom.objects.create(name=name)
        room.users.set(members)
        return room

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


@pytest.fixture
def room(make_room, alice, bob):
    """A room of alice and bob."""
    return make_room(alice, bob, name="General")
