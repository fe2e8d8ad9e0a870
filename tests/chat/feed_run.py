"""A concurrent run of the change feed (chat.feed) and the check of what its readers were handed.

Writers make every kind of change through the chat's own functions, each in a transaction that is
sometimes held open a few milliseconds after its write, so that changes commit in another order
than the one their ids (and, on PostgreSQL, their transaction ids) were handed out in. Readers walk
two users' feeds from cursor to cursor meanwhile: raw (`feed.read`: every change by id) and as
`sync` events (`catchup.sync_since`: a message's, a room's or a read marker's changes may come as
one event carrying its latest state). Each keeps every page it got and every cursor it was handed.

The check (`skips`): a change of the user counts as seen at the first page that brought it (an
event of the same message, room or marker at its position or after it, for events). A cursor
handed out at or past a change's position before the change was seen is a skip: a client resuming
from it would never get that change. So is a change never seen at all.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Callable

from django.db import OperationalError, connections, transaction
from django.db.models import Max, Q

from chat import catchup, errors, feed, lifecycle, reading, rooms, services
from chat.models import ChatChange, ChatMessage, ChatReaction, Membership

Kind = ChatChange.Kind
Key = tuple  # what a change is about: ("change", id), ("message", id), ("room", hex), ("read", hex)
EMOJIS = ("👍", "🎉", "👀")
# The longest a writer holds its transaction open after its write: long enough for other writers
# to commit past it.
HOLD_SECONDS = 0.006
# How long a walk waits for the feed's horizon to pass the run's last change once the writers are
# done: only a transaction left open elsewhere on the database server holds it back that long.
HELD_BACK_SECONDS = 60
# How many changes a reader asks for at a time, at most: small, so that a walk has many pages, and
# many of its cursors are a page's last change rather than the horizon.
READ_LIMIT = 20


@dataclass(frozen=True)
class Seen:
    key: Key
    position: feed.Position


@dataclass(frozen=True)
class Step:
    """One page of a walk: what it brought, and the cursor it handed out."""

    seen: tuple[Seen, ...]
    handed: feed.Position


@dataclass(frozen=True)
class Expected:
    """A change of the user, as a walk must see it."""

    change_id: int
    key: Key
    position: feed.Position


@dataclass(frozen=True)
class Skip:
    change_id: int
    position: feed.Position
    # The cursor handed out at or past the change before the walk saw it; None: never seen, and
    # never passed either.
    handed: feed.Position | None


def change_key(change: ChatChange) -> Key:
    """What an event of `sync` says `change` is about (chat.catchup collapses by it)."""
    if change.kind in feed.MESSAGE_KINDS:
        return ("message", change.message_id)
    if change.kind in (Kind.CREATE_ROOM, Kind.ADD_MEMBERS):
        return ("room", change.room_id.hex)
    if change.kind == Kind.MARK_READ:
        return ("read", change.room_id.hex)
    return ("change", change.pk)


def event_key(event: dict[str, Any]) -> Key:
    if isinstance(event.get("message"), dict):
        return ("message", event["message"]["id"])
    if event["action"] in ("create_room", "add_members"):
        return ("room", event["room"]["id"])
    if event["action"] == "mark_read":
        return ("read", event["room"])
    return ("change", feed.parse_cursor(event["cursor"]).id)


class RawWalker:
    """Walks a user's feed by change (feed.read)."""

    def __init__(self, user: Any) -> None:
        self.user = user

    def expected(self, change: ChatChange) -> Expected:
        return Expected(change.pk, ("change", change.pk), feed.position(change))

    def step(self, since: feed.Position, limit: int) -> tuple[Step, bool]:
        page = feed.read(self.user.pk, since, limit)
        seen = tuple(Seen(("change", change.pk), feed.position(change)) for change in page.changes)
        return Step(seen, page.cursor), page.has_more


class EventWalker:
    """Walks a user's feed as `sync` answers it (catchup.sync_since)."""

    def __init__(self, user: Any) -> None:
        self.user = user

    def expected(self, change: ChatChange) -> Expected:
        return Expected(change.pk, change_key(change), feed.position(change))

    def step(self, since: feed.Position, limit: int) -> tuple[Step, bool]:
        page = catchup.sync_since(self.user, since.cursor(), limit)
        seen = tuple(Seen(event_key(event), feed.parse_cursor(event["cursor"])) for event in page.events)
        return Step(seen, feed.parse_cursor(page.cursor)), page.has_more


Walker = RawWalker | EventWalker


def skips(expected: list[Expected], walk: list[Step]) -> list[Skip]:
    """The changes `walk` skipped: passed by a cursor it handed out before it saw them, or never seen."""
    handed = [step.handed for step in walk]
    covered: dict[Key, list[tuple[feed.Position, int]]] = {}
    for index, step in enumerate(walk):
        for seen in step.seen:
            covered.setdefault(seen.key, []).append((seen.position, index))
    found = []
    for change in expected:
        seen_at = min((index for position, index in covered.get(change.key, ()) if position >= change.position),
                      default=None)
        # The cursors only move forward (`out_of_order` checks it): the first one past the change.
        passed_at = bisect_left(handed, change.position)
        passed = handed[passed_at] if passed_at < len(handed) else None
        if seen_at is None or (passed is not None and passed_at < seen_at):
            found.append(Skip(change.change_id, change.position, passed))
    return found


def unseen(expected: list[Expected], walk: list[Step], upto: int) -> list[Expected]:
    """The changes the walk had not seen by its step `upto` (included)."""
    seen: dict[Key, list[feed.Position]] = {}
    for step in walk[:upto + 1]:
        for one in step.seen:
            seen.setdefault(one.key, []).append(one.position)
    return [change for change in expected
            if not any(position >= change.position for position in seen.get(change.key, ()))]


def out_of_order(walk: list[Step]) -> list[str]:
    """What goes backwards in a walk: a cursor before the one handed out before it, a change at or
    before a position the walk had passed (a change seen twice, or late)."""
    problems = []
    last = feed.Position(-1, -1)
    for index, step in enumerate(walk):
        for seen in step.seen:
            if seen.position <= last:
                problems.append(f"step {index}: {seen} after {last}")
            last = max(last, seen.position)
        if step.handed < last:
            problems.append(f"step {index}: cursor {step.handed} before {last}")
        last = step.handed
    return problems


class HeldBack(AssertionError):
    """The feed's horizon stayed behind the run's last change: a transaction left open on the
    database server (in any of its databases, on PostgreSQL) holds every reader back."""


def walk_from(walker: Walker, since: feed.Position, end: feed.Position, limit: int = 500) -> list[Step]:
    """A fresh walk from `since` to `end` (the run's last change) or past it."""
    steps: list[Step] = []
    deadline = time.monotonic() + HELD_BACK_SECONDS
    while True:
        step, has_more = walker.step(since, limit)
        steps.append(step)
        since = step.handed
        if not has_more and since >= end:
            return steps
        if not has_more:
            _held_back(deadline, since, end)


def _held_back(deadline: float, cursor: feed.Position, end: feed.Position) -> None:
    """Between the reads of a walk that reached the horizon short of `end`: a moment for the
    transaction that holds it to end (no event announces it), or HeldBack after the deadline."""
    if time.monotonic() > deadline:
        raise HeldBack(f"the feed stayed at {cursor}, short of {end}, for {HELD_BACK_SECONDS} s")
    time.sleep(0.01)


def last_position() -> feed.Position:
    """The position of the newest change: a walk that passed it has passed every change."""
    newest = ChatChange.objects.order_by("-xid", "-id").values_list("xid", "id").first()
    return feed.Position(*newest) if newest is not None else feed.Position(0, 0)


def late_commits(walk: list[Step]) -> int:
    """How many changes a walk saw after one with a higher id (from its raw ids): those whose
    transaction committed after a later one's, which is the case a plain `id > cursor` gets wrong."""
    highest, late = 0, 0
    for step in walk:
        for seen in step.seen:
            late += seen.position.id < highest
            highest = max(highest, seen.position.id)
    return late


@dataclass
class World:
    """The users and rooms the writers work on, and what they made; shared by the writer threads."""

    observed: list[Any]  # the users whose feeds the readers walk
    writers: list[Any]
    guests: list[Any]  # added to rooms and leaving them; never observed
    rooms: list[tuple[str, tuple[int, ...]]]  # (room id, members who post in it)
    messages: list[tuple[int, int, str]] = field(default_factory=list)  # (id, author, room id), committed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.users = {user.pk: user for user in [*self.observed, *self.writers, *self.guests]}

    def pick_room(self, rng: random.Random) -> tuple[str, tuple[int, ...]]:
        with self.lock:
            return rng.choice(self.rooms)

    def pick_message(self, rng: random.Random) -> tuple[int, int, str] | None:
        with self.lock:
            return rng.choice(self.messages) if self.messages else None

    def committed(self, add: Callable[[], None]) -> None:
        """Note what the running transaction made once it has committed (never if it rolls back)."""
        def note() -> None:
            with self.lock:
                add()

        transaction.on_commit(note)

    def posted(self, message: ChatMessage) -> None:
        self.committed(lambda: self.messages.append((message.pk, message.user_id, message.room_id.hex)))


def _post(world: World, writer: Any, rng: random.Random) -> None:
    room, members = world.pick_room(rng)
    author = world.users[rng.choice(members)]
    world.posted(services.post_message(author, room, f"m{rng.random()}", str(uuid.uuid4())).message)


def _post_together(world: World, writer: Any, rng: random.Random) -> None:
    # As a worker stores the messages that came together: one insert of several rows.
    posts = []
    for _ in range(rng.randint(2, 3)):
        room, members = world.pick_room(rng)
        posts.append(services.Post(rng.choice(members), room, f"m{rng.random()}", str(uuid.uuid4())))
    for outcome in services.post_messages_as(posts):
        if isinstance(outcome, Exception):
            raise outcome
        world.posted(outcome.message)


def _direct(world: World, writer: Any, rng: random.Random) -> None:
    to = rng.choice(world.observed)
    world.posted(rooms.direct_message(writer, to.get_username(), "psst", str(uuid.uuid4())).message)


def _message_and_author(world: World, rng: random.Random) -> tuple[Any, int] | None:
    """A message made in the run and its author (who alone may edit or delete it)."""
    picked = world.pick_message(rng)
    return None if picked is None else (world.users[picked[1]], picked[0])


def _edit(world: World, writer: Any, rng: random.Random) -> None:
    if (own := _message_and_author(world, rng)) is not None:
        lifecycle.edit_message(own[0], own[1], f"edited {rng.random()}", str(uuid.uuid4()))


def _delete(world: World, writer: Any, rng: random.Random) -> None:
    if (own := _message_and_author(world, rng)) is not None:
        lifecycle.delete_message(own[0], own[1], str(uuid.uuid4()))


def _react(world: World, writer: Any, rng: random.Random) -> None:
    picked = world.pick_message(rng)
    if picked is not None:
        lifecycle.add_reaction(writer, picked[0], rng.choice(EMOJIS), str(uuid.uuid4()))


def _unreact(world: World, writer: Any, rng: random.Random) -> None:
    theirs = list(ChatReaction.objects.filter(user=writer).values_list("message_id", "emoji")[:20])
    if theirs:
        message_id, emoji = rng.choice(theirs)
        lifecycle.remove_reaction(writer, message_id, emoji, str(uuid.uuid4()))


def _mark_read(world: World, writer: Any, rng: random.Random) -> None:
    room, members = world.pick_room(rng)
    reader = world.users[rng.choice(members)]
    reading.mark_read(reader, room, 2 ** 53)


def _create_room(world: World, writer: Any, rng: random.Random) -> None:
    # The observed users come into rooms only as they are made: a room they are added to later
    # brings its earlier changes into their feed, behind their cursors by design (the client
    # reloads such a room), which is no skip.
    invited = [user for user in [*world.observed, *world.writers] if user.pk != writer.pk and rng.random() < 0.5]
    summary = rooms.create_room(writer, f"r{rng.random()}", [user.get_username() for user in invited])
    entry = (summary.room.pk.hex, tuple(user.pk for user in [writer, *invited]))
    world.committed(lambda: world.rooms.append(entry))


def _add_guest(world: World, writer: Any, rng: random.Random) -> None:
    room, members = world.pick_room(rng)
    rooms.add_members(world.users[members[0]], room, [rng.choice(world.guests).get_username()])


def _guest_leaves(world: World, writer: Any, rng: random.Random) -> None:
    guest = rng.choice(world.guests)
    theirs = list(Membership.objects.filter(user=guest, room__is_direct=False).values_list("room_id", flat=True))
    if theirs:
        rooms.leave_room(guest, rng.choice(theirs).hex)


def _every_kind(world: World, writer: Any, rng: random.Random) -> None:
    """A change of every kind that is the first observed user's, in one transaction: the random
    operations make the rare kinds of one user's only a few times a run, and now and then none."""
    observed = world.observed[0]
    summary = rooms.create_room(writer, f"every kind {rng.random()}", [observed.get_username()])
    room = summary.room.pk.hex
    world.committed(lambda: world.rooms.append((room, (writer.pk, observed.pk))))
    kept, deleted = (services.post_message(writer, room, text, str(uuid.uuid4())).message for text in ("kept", "gone"))
    lifecycle.edit_message(writer, kept.pk, "kept, edited", str(uuid.uuid4()))
    lifecycle.add_reaction(observed, kept.pk, EMOJIS[0], str(uuid.uuid4()))
    lifecycle.remove_reaction(observed, kept.pk, EMOJIS[0], str(uuid.uuid4()))
    lifecycle.delete_message(writer, deleted.pk, str(uuid.uuid4()))
    world.posted(kept)
    guest = rng.choice(world.guests)
    rooms.add_members(writer, room, [guest.get_username()])
    rooms.leave_room(guest, room)
    reading.mark_read(observed, room, kept.pk)
    world.posted(rooms.direct_message(writer, observed.get_username(), "psst", str(uuid.uuid4())).message)


# Every kind of change, the messages most often (as in a chat).
OPERATIONS: list[tuple[Callable[[World, Any, random.Random], None], int]] = [
    (_post, 8), (_post_together, 2), (_direct, 1), (_edit, 3), (_delete, 1), (_react, 3), (_unreact, 1),
    (_mark_read, 3), (_create_room, 1), (_add_guest, 1), (_guest_leaves, 1)]


@dataclass
class Outcome:
    walks: list[list[Step]]
    end: feed.Position  # the last change's
    refused: int  # requests the chat refused (a deleted message's edit, a guest who had left…)
    failures: list[BaseException]


def _write(world: World, writer: Any, rng: random.Random, ops: int, refused: list[int],
           failures: list[BaseException], every_kind_at: int | None = None) -> None:
    """`ops` random operations, the one at `every_kind_at` (if any) `_every_kind` instead."""
    try:
        operations, weights = zip(*OPERATIONS)
        for index in range(ops):
            operation = _every_kind if index == every_kind_at else rng.choices(operations, weights)[0]
            try:
                with transaction.atomic():
                    operation(world, writer, rng)
                    if rng.random() < 0.5:
                        # Holding the transaction open after its write is what this run is about:
                        # meanwhile the other writers commit changes with higher ids.
                        time.sleep(rng.random() * HOLD_SECONDS)
            except errors.ChatError:
                refused.append(1)
            except OperationalError as exc:  # a deadlock PostgreSQL broke: rolled back, stored nothing
                if "deadlock" not in str(exc):
                    raise
                refused.append(1)
    except BaseException as exc:  # reported by the test, with the others
        failures.append(exc)
    finally:
        connections.close_all()


@dataclass
class Finish:
    """Set once every writer has committed, with the position of the last change."""

    done: threading.Event = field(default_factory=threading.Event)
    end: feed.Position = feed.Position(0, 0)


def _read(walker: Walker, since: feed.Position, rng: random.Random, finish: Finish, walk: list[Step],
          failures: list[BaseException]) -> None:
    try:
        deadline = None
        while True:
            finished = finish.done.is_set()
            step, has_more = walker.step(since, rng.randint(1, READ_LIMIT))
            walk.append(step)
            since = step.handed
            if finished and not has_more:
                if since >= finish.end:
                    return  # past every change, all committed before this page began
                deadline = deadline or time.monotonic() + HELD_BACK_SECONDS
                _held_back(deadline, since, finish.end)
            # Room for the writers between pages (a wait, not a sleep: the finish cuts it short).
            finish.done.wait(rng.random() * 0.002)
    except BaseException as exc:
        failures.append(exc)
    finally:
        connections.close_all()


def run(world: World, walkers: list[Walker], writers: int, ops: int, seed: int) -> Outcome:
    """`writers` threads making `ops` changes each while every walker walks from now; each thread
    has its own database connection, closed at its end."""
    rng = random.Random(seed)
    start = feed.now()
    finish = Finish()
    walks: list[list[Step]] = [[] for _ in walkers]
    refused: list[int] = []
    failures: list[BaseException] = []
    readers = [threading.Thread(target=_read, args=(walker, start, random.Random(rng.random()), finish, walk, failures))
               for walker, walk in zip(walkers, walks)]
    # The first writer makes every kind of the first observed user's change halfway through.
    writing = [threading.Thread(target=_write, args=(world, world.writers[n % len(world.writers)],
                                                     random.Random(rng.random()), ops, refused, failures,
                                                     ops // 2 if n == 0 else None))
               for n in range(writers)]
    for thread in [*readers, *writing]:
        thread.start()
    for thread in writing:
        thread.join()
    finish.end = last_position()
    finish.done.set()
    for thread in readers:
        thread.join()
    return Outcome(walks, finish.end, len(refused), failures)


def changes_of(user: Any, after_id: int) -> list[ChatChange]:
    """Every change of the user with an id above `after_id`, read from the table (not the feed): of
    the rooms they are a member of, and their own read markers and departures."""
    mine = (Q(room_id__in=Membership.objects.filter(user=user).values("room_id")) & ~Q(kind=Kind.MARK_READ)) \
        | Q(user=user, kind__in=feed.PERSONAL_KINDS)
    return list(ChatChange.objects.filter(mine, id__gt=after_id).order_by("xid", "id"))


def newest_change_id() -> int:
    return ChatChange.objects.aggregate(newest=Max("id"))["newest"] or 0
