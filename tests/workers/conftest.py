"""Shared set-up of the worker tests."""

import dataclasses

import pytest

from workers import dispatch
from workers.actions import Action, registry


@pytest.fixture(autouse=True)
def connection_checks(monkeypatch) -> list[str]:
    """Record, instead of running, process()'s close_old_connections().

    In production it drops a stale database connection between messages; inside a test's
    transaction it would close the test's own connection (autocommit is off there).
    """
    calls: list[str] = []
    monkeypatch.setattr(dispatch, "close_old_connections", lambda: calls.append("close_old_connections"))
    return calls


@pytest.fixture
def replace_handler():
    """replace_handler(name, handler): the action answers with `handler` for this test only."""
    replaced: list[Action] = []

    def replace(name: str, handler) -> Action:
        declared = registry.get(name)
        registry.replace(dataclasses.replace(declared, handler=handler, batch=None))
        replaced.append(declared)
        return declared

    yield replace
    for declared in reversed(replaced):
        registry.replace(declared)
