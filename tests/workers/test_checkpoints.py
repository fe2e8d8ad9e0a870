"""The worker's WAL checkpointer: the WAL is copied and started over beside the requests, so that
no request's commit reaches the WAL's own checkpoint threshold."""

from __future__ import annotations

import time
from typing import Callable

import pytest
from django.db import connection

from chat.models import ChatRoom
from workers.checkpoints import WalCheckpointer

pytestmark = pytest.mark.django_db(transaction=True)

# The thread serves SQLite's WAL alone; the other tests of this file run on an SQLite test database.
sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="the WAL checkpointer is SQLite's alone")


def not_busy(checkpoint: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """The checkpoint's (frames in the WAL, frames copied), tried again while it meets another.

    The end-to-end tests' workers, which live for the whole test session, checkpoint the same SQLite
    file every 0.5 s; a checkpoint that runs into one of theirs does nothing and answers (-1, -1).
    """
    for _ in range(200):
        outcome = checkpoint()
        if outcome != (-1, -1):
            return outcome
        time.sleep(0.01)
    raise AssertionError("for 2 s every checkpoint ran into another one")


def passive_checkpoint() -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        _, logged, copied = cursor.fetchone()
        return logged, copied


def frames_in_wal() -> int:
    """Frames the WAL holds now (a PASSIVE checkpoint that finds nothing new to copy copies nothing)."""
    return not_busy(passive_checkpoint)[0]


def write(rows: int) -> None:
    for n in range(rows):
        ChatRoom.objects.create(name=f"room {n}")


@sqlite_only
def test_the_test_database_is_in_wal_mode_with_the_commits_threshold():
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 0


@sqlite_only
def test_a_checkpoint_copies_every_frame_of_the_wal():
    write(20)
    logged, copied = not_busy(WalCheckpointer().checkpoint)
    assert logged > 0 and copied == logged


@sqlite_only
def test_after_a_checkpoint_the_wal_is_written_from_its_start_again():
    write(20)
    logged, copied = not_busy(WalCheckpointer(restart_frames=1).checkpoint)
    assert copied == logged > 0
    write(1)
    # The commit after the checkpoint started the WAL over: it holds that commit's frames only.
    assert 0 < frames_in_wal() < logged


@sqlite_only
def test_the_thread_checkpoints_at_every_turn_until_stopped(monkeypatch):
    checkpointer = WalCheckpointer(interval=0.01, restart_frames=1)
    outcomes: list[tuple[int, int]] = []
    checkpoint = checkpointer.checkpoint
    monkeypatch.setattr(checkpointer, "checkpoint", lambda: outcomes.append(checkpoint()) or outcomes[-1])
    checkpointer.start()
    try:
        assert checkpointer.running
        write(20)
        after_writes = len(outcomes)
        checkpointer.turned.clear()
        # Two turns after the writes that ran (not_busy's reason): the second began after them, so
        # it copied them.
        while len([outcome for outcome in outcomes[after_writes:] if outcome != (-1, -1)]) < 2:
            assert checkpointer.turned.wait(10), "the checkpointer stopped turning"
            checkpointer.turned.clear()
        write(1)
        assert frames_in_wal() < 20
    finally:
        checkpointer.stop()
    assert not checkpointer.running


@sqlite_only
def test_a_failed_turn_is_logged_and_the_next_one_runs(monkeypatch, caplog):
    from django.db import OperationalError

    checkpointer = WalCheckpointer(interval=0.01)
    failures = iter([OperationalError("disk I/O error")])

    def checkpoint():
        error = next(failures, None)
        if error is not None:
            raise error
        return 0, 0

    monkeypatch.setattr(checkpointer, "checkpoint", checkpoint)
    checkpointer.start()
    try:
        while checkpointer.turns < 2:
            assert checkpointer.turned.wait(10)
            checkpointer.turned.clear()
    finally:
        checkpointer.stop()
    assert "WAL checkpoint failed (disk I/O error)" in caplog.text


def test_only_sqlite_gets_a_checkpointer():
    # Run on SQLite and on PostgreSQL (CI's second pass): each takes one branch.
    made = WalCheckpointer.for_database()
    if connection.vendor == "sqlite":
        assert isinstance(made, WalCheckpointer)
    else:
        assert made is None
