"""Shared set-up of the worker tests."""

import pytest

from workers import dispatch


@pytest.fixture(autouse=True)
def connection_checks(monkeypatch) -> list[str]:
    """Record, instead of running, process()'s close_old_connections().

    In production it drops a stale database connection between messages; inside a test's
    transaction it would close the test's own connection (autocommit is off there).
    """
    calls: list[str] = []
    monkeypatch.setattr(dispatch, "close_old_connections", lambda: calls.append("close_old_connections"))
    return calls
