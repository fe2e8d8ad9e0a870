"""The invariants of a fault run (bench/fault_run.py), as pure functions over what the clients
logged and what the database stored: no I/O, so that each one is tested on hand-made logs.

- Stored exactly once: every acknowledged message (a success reply to its sender's
  `new_message`) is one row, found by its sender and uuid, with the id the reply carried.
- Nothing missed: each client's full `sync` from 0 after the run returns exactly the stored
  messages of its rooms, none twice.
- Nothing leaked: no client receives a frame of a room it is not in, nor a reply to another
  client's request (uuids are `<client id>-<n>`, so each names its client).
- Exactly one reply: every frame sent on a connection gets a reply on it, or that connection
  was closed by the server with a documented code; never more replies than the protocol allows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Close codes docs/protocol.md documents (the gateway's own, and 1006 for a connection
# that ended without a Close frame): a frame sent on a connection that ended so may go unanswered,
# and is retried on the next one.
DOCUMENTED_CLOSES = frozenset({1001, 1003, 1006, 1007, 1009, 4001, 4008})
# Actions whose success reply goes to every connection of every member (docs/protocol.md): a
# client may get one for a uuid it never sent on that connection (another connection's attempt,
# or another member's message).
BROADCAST_ACTIONS = frozenset({"new_message", "direct_message", "edit_message", "delete_message", "add_reaction",
                               "remove_reaction", "create_room", "add_members", "leave_room", "typing"})
# Frames the server sends of its own accord, with no uuid.
SERVER_FRAMES = frozenset({"resync"})
# The violation kinds, in the order the summary prints them.
KINDS = ("lost", "duplicated", "leaked", "unanswered", "unexpected")


@dataclass(frozen=True)
class Event:
    """One thing a client saw: a connection opened, a frame sent or received, a connection ended
    (`code`, and whether the server ended it or the client did)."""

    kind: str  # "open", "sent", "recv" or "close"
    conn: int
    frame: dict[str, Any] | None = None
    code: int | None = None
    by_server: bool = False


@dataclass
class ClientLog:
    client_id: str
    username: str
    rooms: frozenset[str]
    events: list[Event] = field(default_factory=list)
    # The messages of a full `sync` from 0 once the run is over; None if it could not be done.
    final_sync: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: int
    username: str
    room: str
    client_uuid: str | None


@dataclass(frozen=True)
class Violation:
    kind: str
    client: str
    detail: str


def room_key(room: str) -> str:
    """A room id as 32 lower-case hex digits (requests may use the hyphenated form)."""
    return room.replace("-", "").lower()


def uuid_owner(uuid: str) -> str:
    """The client id a uuid names (`c17-42` → `c17`)."""
    return uuid.split("-", 1)[0]


def messages_in(frame: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every message object a frame carries."""
    if isinstance(frame.get("message"), dict):
        yield frame["message"]
    for key in ("messages", "room_messages"):
        for message in frame.get(key) or ():
            if isinstance(message, dict):
                yield message


def rooms_in(frame: dict[str, Any]) -> set[str]:
    """Every room a frame names: its own `room` and its messages' rooms."""
    rooms = set()
    room = frame.get("room")
    if isinstance(room, str):
        rooms.add(room_key(room))
    elif isinstance(room, dict) and isinstance(room.get("id"), str):
        rooms.add(room_key(room["id"]))
    rooms.update(room_key(message["room"]) for message in messages_in(frame) if isinstance(message.get("room"), str))
    return rooms


def acknowledged(log: ClientLog) -> dict[str, int]:
    """uuid → message id of each of the client's `new_message`s that got a success reply."""
    acks: dict[str, int] = {}
    for event in log.events:
        frame = event.frame
        if (event.kind == "recv" and frame and frame.get("action") == "new_message" and frame.get("status") == "success"
                and uuid_owner(str(frame.get("uuid"))) == log.client_id):
            acks[frame["uuid"]] = frame["message"]["id"]
    return acks


def check_stored_once(logs: Iterable[ClientLog], stored: Iterable[StoredMessage]) -> list[Violation]:
    rows: dict[tuple[str, str], list[StoredMessage]] = defaultdict(list)
    for row in stored:
        if row.client_uuid is not None:
            rows[(row.username, row.client_uuid)].append(row)
    violations = [Violation("duplicated", uuid_owner(uuid), f"{user}/{uuid} stored {len(found)} times")
                  for (user, uuid), found in rows.items() if len(found) > 1]
    for log in logs:
        for uuid, message_id in acknowledged(log).items():
            found = rows.get((log.username, uuid), [])
            if not found:
                violations.append(Violation("lost", log.client_id, f"{uuid} acknowledged as {message_id}, not stored"))
            elif len(found) == 1 and found[0].id != message_id:
                violations.append(Violation("duplicated", log.client_id,
                                            f"{uuid} acknowledged as {message_id}, stored as {found[0].id}"))
    return violations


def check_sync_complete(logs: Iterable[ClientLog], stored: Iterable[StoredMessage]) -> list[Violation]:
    by_room: dict[str, set[int]] = defaultdict(set)
    for row in stored:
        by_room[room_key(row.room)].add(row.id)
    violations = []
    for log in logs:
        if log.final_sync is None:
            violations.append(Violation("lost", log.client_id, "the final sync could not be done"))
            continue
        expected = set().union(*(by_room[room] for room in log.rooms))
        ids = Counter(message["id"] for message in log.final_sync)
        missing = expected - set(ids)
        extra = set(ids) - expected
        twice = sorted(message_id for message_id, count in ids.items() if count > 1)
        if missing:
            violations.append(Violation("lost", log.client_id,
                                        f"final sync misses {len(missing)} messages, e.g. {sorted(missing)[:5]}"))
        if extra:
            violations.append(Violation("leaked", log.client_id,
                                        f"final sync has {len(extra)} messages not of its rooms, e.g. {sorted(extra)[:5]}"))
        if twice:
            violations.append(Violation("duplicated", log.client_id, f"final sync returned ids twice: {twice[:5]}"))
    return violations


def check_no_leaks(logs: Iterable[ClientLog], usernames: dict[str, str]) -> list[Violation]:
    """`usernames`: client id → username, to check that a broadcast's uuid names its author."""
    violations = []
    for log in logs:
        for event in log.events:
            frame = event.frame
            if event.kind != "recv" or frame is None:
                continue
            foreign = rooms_in(frame) - log.rooms
            if foreign:
                violations.append(Violation("leaked", log.client_id, f"conn {event.conn}: frame of rooms "
                                            f"{sorted(foreign)} it is not in: {frame}"))
            uuid = frame.get("uuid")
            if uuid is None:
                if frame.get("action") not in SERVER_FRAMES:
                    violations.append(Violation("unexpected", log.client_id, f"conn {event.conn}: frame without "
                                                f"uuid: {frame}"))
                continue
            owner = uuid_owner(str(uuid))
            if owner == log.client_id:
                continue
            # Another client's uuid: only a broadcast success of that client's own message may carry it.
            author = (frame.get("message") or {}).get("user", {}).get("username") \
                if isinstance(frame.get("message"), dict) else None
            if not (frame.get("status") == "success" and frame.get("action") in BROADCAST_ACTIONS
                    and author is not None and usernames.get(owner) == author):
                violations.append(Violation("leaked", log.client_id, f"conn {event.conn}: reply to {owner}'s "
                                            f"request: {frame}"))
    return violations


def check_replies(logs: Iterable[ClientLog]) -> list[Violation]:
    """Every frame sent on a connection: a reply on that connection, or a documented close of it;
    and no more replies than were due."""
    violations = []
    for log in logs:
        sent: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))  # conn → uuid → actions
        replies: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        closes: dict[int, Event] = {}
        attempts: Counter[str] = Counter()
        for event in log.events:
            frame = event.frame
            if event.kind == "sent" and frame is not None:
                sent[event.conn][frame["uuid"]].append(frame["action"])
                attempts[frame["uuid"]] += 1
            elif event.kind == "recv" and frame is not None and uuid_owner(str(frame.get("uuid"))) == log.client_id:
                replies[event.conn][frame["uuid"]].append(frame)
            elif event.kind == "close":
                closes[event.conn] = event
        for conn in sent.keys() | replies.keys():
            close = closes.get(conn)
            documented = close is not None and close.by_server and close.code in DOCUMENTED_CLOSES
            for uuid in sent[conn].keys() | replies[conn].keys():
                actions, answers = sent[conn][uuid], replies[conn][uuid]
                errors = sum(1 for answer in answers if answer.get("status") != "success")
                action = actions[0] if actions else answers[0].get("action")
                broadcast = action in BROADCAST_ACTIONS
                if not actions and not (broadcast and errors == 0):
                    violations.append(Violation("leaked", log.client_id, f"conn {conn}: reply to {uuid}, "
                                                f"never sent on it: {answers[0]}"))
                    continue
                # A broadcast success may come once per attempt anywhere (each is answered to every
                # connection of the sender); an error, or any other reply, once per frame sent here.
                due = attempts[uuid] if broadcast else len(actions)
                if errors > len(actions) or len(answers) - errors > due:
                    violations.append(Violation("duplicated", log.client_id, f"conn {conn}: {len(answers)} replies "
                                                f"to {uuid}, sent {len(actions)} times here, {attempts[uuid]} in all"))
                if len(answers) < len(actions) and not documented:
                    how = "still open" if close is None else \
                        f"closed with {close.code} by the {'server' if close.by_server else 'client'}"
                    violations.append(Violation("unanswered", log.client_id, f"conn {conn}: {uuid} ({action}) sent "
                                                f"{len(actions)} times, {len(answers)} replies, connection {how}"))
    return violations


def check_all(logs: list[ClientLog], stored: list[StoredMessage]) -> list[Violation]:
    usernames = {log.client_id: log.username for log in logs}
    return (check_stored_once(logs, stored) + check_sync_complete(logs, stored) + check_no_leaks(logs, usernames)
            + check_replies(logs))


def tally(violations: Iterable[Violation]) -> dict[str, int]:
    counts = Counter(violation.kind for violation in violations)
    return {kind: counts.get(kind, 0) for kind in KINDS}
