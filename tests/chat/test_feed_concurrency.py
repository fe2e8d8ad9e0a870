"""The change feed's promise under concurrent writers: a reader that walks from cursor to cursor
skips nothing, however the writers' transactions interleave and in whatever order they commit.

The run (tests/chat/feed_run.py): eight writer threads make every kind of change, some holding
their transaction open a few milliseconds after writing; three readers walk two users' feeds
meanwhile, raw and as `sync` events. Then every change of the user must be in each reader's walk,
no cursor handed out may have passed a change the reader had not seen, and a fresh walk from every
cursor handed out must bring every change not seen before it. On SQLite the writers take turns; on
PostgreSQL (DATABASE_URL) they commit out of order, which the last test shows a plain
`id > cursor` gets wrong.

FEED_RUN_OPS (changes per writer, 30 by default), FEED_RUN_WRITERS (8) and FEED_RUN_SEED make a
longer or another run. A raw reader's every cursor gets a fresh walk; the `sync` reader's, which
cost more (each builds the events of the rest of the run), an evenly spread FEED_RUN_EVENT_WALKS
of them (30; 0: every one). FEED_RUN_OPS=200 FEED_RUN_EVENT_WALKS=0 takes about 35 s on
PostgreSQL and 2 minutes on SQLite; more needs pytest's --timeout raised.
"""

from __future__ import annotations

import os

import pytest
from django.db import connection

from chat import feed, statements
from chat.models import ChatChange

from . import feed_run
from .feed_run import EventWalker, Expected, RawWalker, Seen, Step, World

Kind = ChatChange.Kind
OPS = int(os.environ.get("FEED_RUN_OPS", "30"))
WRITERS = int(os.environ.get("FEED_RUN_WRITERS", "8"))
SEED = int(os.environ.get("FEED_RUN_SEED", "11"))
EVENT_WALKS = int(os.environ.get("FEED_RUN_EVENT_WALKS", "30"))
P = feed.Position

# Committed for real: the writers and readers are threads, each with its own connection.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(make_user, make_room) -> World:
    observed = [make_user("observed_1"), make_user("observed_2")]
    writers = [make_user(f"writer_{n}") for n in range(1, 5)]
    guests = [make_user(f"guest_{n}") for n in range(1, 4)]
    everyone = [*observed, *writers]
    shared = [make_room(*everyone, name="everyone"), make_room(*everyone, *guests, name="with guests"),
              # A room of the second observed user's, not the first's: none of its changes is theirs.
              make_room(observed[1], *writers, *guests, name="not the first's")]
    return World(observed, writers, guests,
                 [(shared[0].pk.hex, tuple(user.pk for user in everyone)),
                  (shared[1].pk.hex, tuple(user.pk for user in everyone)),
                  (shared[2].pk.hex, tuple(user.pk for user in [observed[1], *writers]))])


def concurrent_run(world: World, ops: int = OPS) -> tuple[list[feed_run.Walker], feed_run.Outcome, int]:
    before = feed_run.newest_change_id()
    walkers = [RawWalker(world.observed[0]), EventWalker(world.observed[0]), RawWalker(world.observed[1])]
    outcome = feed_run.run(world, walkers, WRITERS, ops, SEED)
    assert outcome.failures == []
    return walkers, outcome, before


def problems(walker: feed_run.Walker, walk: list[Step], before: int, end: P,
             fresh_walks: int | None = 0) -> list[str]:
    """What the walk got wrong: skips in it, things in it out of order, and skips of a fresh walk
    from the cursors it was handed: every one (`fresh_walks` 0), so many evenly spread, or none (None)."""
    expected = [walker.expected(change) for change in feed_run.changes_of(walker.user, before)]
    found = [f"skipped {skip}" for skip in feed_run.skips(expected, walk)]
    found += feed_run.out_of_order(walk)
    if fresh_walks is None:
        return found
    # The last step of each cursor: what the walk had seen when it last stood there.
    last_at = {step.handed: index for index, step in enumerate(walk)}
    cursors = sorted(last_at)
    if fresh_walks:
        cursors = cursors[::max(1, len(cursors) // fresh_walks)]
    for cursor in cursors:
        missing = feed_run.unseen(expected, walk, last_at[cursor])
        found += [f"a fresh walk from {cursor} skipped {skip}"
                  for skip in feed_run.skips(missing, feed_run.walk_from(walker, cursor, end))]
    return found


def test_readers_walking_the_feed_while_writers_commit_out_of_order_skip_nothing(world):
    walkers, outcome, before = concurrent_run(world)
    for walker, walk in zip(walkers, outcome.walks):
        fresh_walks = EVENT_WALKS if isinstance(walker, EventWalker) else 0
        assert problems(walker, walk, before, outcome.end, fresh_walks) == [], type(walker).__name__
    # The run did what it is for: every kind of change, among them the first user's, and the
    # readers handed out many cursors along the way.
    theirs = feed_run.changes_of(world.observed[0], before)
    assert {change.kind for change in theirs} == set(Kind)
    assert outcome.refused < WRITERS * OPS / 2
    assert all(len({step.handed for step in walk}) > 10 for walk in outcome.walks)
    if feed.by_transaction(connection):
        # Changes were seen after one with a higher id: transactions committed out of id order.
        assert feed_run.late_commits(outcome.walks[0]) > 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's writers take turns: ids commit in order "
                                                              "there, and `id > cursor` is the rule")
def test_the_check_catches_the_skips_of_a_plain_id_cursor(world, monkeypatch):
    # The feed as if positions were ids alone and a reader handed out the newest one it saw, as on
    # SQLite: a transaction that wrote a lower id and commits after a reader looked lands behind
    # its cursor. (The SQL of the messages' and the changes' inserts is made again without the
    # transaction ids.)
    monkeypatch.setattr(feed, "by_transaction", lambda connection=None: False)
    monkeypatch.setattr(statements, "_statements", {})
    monkeypatch.setattr(feed, "_insert_statements", {})
    walkers, outcome, before = concurrent_run(world)
    skipped = [problems(walker, walk, before, outcome.end, fresh_walks=None)
               for walker, walk in zip(walkers, outcome.walks)]
    assert any(skipped)


class TestTheCheck:
    """The check itself, on walks made up by hand."""

    expected = [Expected(1, ("change", 1), P(0, 1)), Expected(2, ("change", 2), P(0, 2))]

    def test_a_walk_that_saw_each_change_before_passing_it_skipped_nothing(self):
        # Seen out of id order (a late commit) is fine: positions are what count.
        expected = [Expected(1, ("change", 1), P(0, 1)), Expected(2, ("change", 2), P(5, 2))]
        walk = [Step((Seen(("change", 1), P(0, 1)),), P(5, 0)), Step((Seen(("change", 2), P(5, 2)),), P(6, 0))]
        assert feed_run.skips(expected, walk) == []
        assert feed_run.out_of_order(walk) == []

    def test_a_cursor_past_a_change_not_yet_seen_is_a_skip(self):
        walk = [Step((Seen(("change", 2), P(0, 2)),), P(0, 2)), Step((Seen(("change", 1), P(0, 1)),), P(0, 3))]
        assert feed_run.skips(self.expected, walk) == [feed_run.Skip(1, P(0, 1), P(0, 2))]
        assert feed_run.out_of_order(walk) != []

    def test_a_change_never_seen_is_a_skip(self):
        walk = [Step((Seen(("change", 1), P(0, 1)),), P(0, 1))]
        assert feed_run.skips(self.expected, walk) == [feed_run.Skip(2, P(0, 2), None)]

    def test_an_event_of_a_later_change_of_the_same_message_covers_an_earlier_one(self):
        expected = [Expected(1, ("message", 7), P(0, 1)), Expected(2, ("message", 7), P(0, 2))]
        assert feed_run.skips(expected, [Step((Seen(("message", 7), P(0, 2)),), P(0, 2))]) == []
        assert feed_run.skips(expected, [Step((Seen(("message", 7), P(0, 1)),), P(0, 2))]) == [
            feed_run.Skip(2, P(0, 2), P(0, 2))]

    def test_unseen_is_what_the_walk_had_not_seen_by_a_step(self):
        walk = [Step((Seen(("change", 1), P(0, 1)),), P(0, 1)), Step((Seen(("change", 2), P(0, 2)),), P(0, 2))]
        assert feed_run.unseen(self.expected, walk, 0) == self.expected[1:]
        assert feed_run.unseen(self.expected, walk, 1) == []
