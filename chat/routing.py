"""Where a reply for several users goes: the reply topics of the live gateway processes that hold a
connection of one of them, read from the presence the gateways write (websockets_gateway/presence.py).

Shared by the workers (their batches' replies, and `who_is_online`) and `chat.bus` (live events from
any Django process); it imports redis and the pure `websockets_gateway.keys`, nothing of Django, so
`chat` needs nothing of `workers`. docs/protocol.md (the bus section) gives the rules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence


from websockets_gateway.keys import Keys, gateway_of
from websockets_gateway.redis_clients import REDIS_ERRORS, SyncClient, text

logger = logging.getLogger(__name__)

# How long a presence id found alive is trusted without reading its heartbeat again: the steady
# state of a busy worker is then one round trip a batch (the SMEMBERS), plus one MGET a second.
# A gateway that dies within it gets a publish no one reads, as a dead gateway's reply topic would.
ALIVE_FOR = 1.0
# Presence ids remembered alive at most: a few per gateway process, so far more than a deployment
# has; past it the oldest are forgotten (and read again when next seen).
MAX_ALIVE = 10_000


class AliveCache:
    """Presence ids whose heartbeat was found within `ttl` seconds; bounded by `capacity`.
    Thread-safe: a web process's request threads share one."""

    def __init__(self, ttl: float = ALIVE_FOR, capacity: int = MAX_ALIVE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        # Presence id -> when it stops being trusted; in the order they were found.
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._until)

    def known(self, presence_ids: Iterable[str]) -> set[str]:
        """The ids among these found alive less than `ttl` seconds ago."""
        now = self._clock()
        with self._lock:
            return {presence_id for presence_id in presence_ids if self._until.get(presence_id, 0.0) > now}

    def add(self, presence_ids: Collection[str]) -> None:
        """These ids were just found alive."""
        if not presence_ids:
            return
        until = self._clock() + self.ttl
        with self._lock:
            for presence_id in presence_ids:
                self._until.pop(presence_id, None)  # to the end: the order stays the order found
                self._until[presence_id] = until
            if len(self._until) > self.capacity:
                self._evict()

    def _evict(self) -> None:
        # Rare (only a full cache pays it): the expired first, then the oldest.
        now = self._clock()
        for presence_id in [key for key, until in self._until.items() if until <= now]:
            del self._until[presence_id]
        excess = len(self._until) - self.capacity
        for presence_id in list(self._until)[:max(0, excess)]:
            del self._until[presence_id]


def live_presence(client: SyncClient, user_ids: Iterable[int], keys: Keys,
                  alive: AliveCache | None = None) -> dict[int, set[str]]:
    """The live presence ids of each of these users; a user with none is left out (`who_is_online`).

    One pipeline of SMEMBERS, then `_live`'s read of the heartbeats, and the removal of dead ids
    when there are any. None for no users. RedisError propagates.
    """
    users = list(dict.fromkeys(user_ids))
    if not users:
        return {}
    pipe = client.pipeline(transaction=False)
    for user_pk in users:
        pipe.smembers(keys.presence_user(user_pk))
    ids_by_user = {user_pk: {text(member) for member in members}
                   for user_pk, members in zip(users, pipe.execute(), strict=True) if members}
    if not ids_by_user:
        return {}
    live = _live(client, set().union(*ids_by_user.values()), keys, alive)
    present: dict[int, set[str]] = {}
    dead_by_user: dict[int, set[str]] = {}
    for user_pk, ids in ids_by_user.items():
        if ids & live:
            present[user_pk] = ids & live
        if ids - live:
            dead_by_user[user_pk] = ids - live
    if dead_by_user:
        _forget_dead(client, dead_by_user, keys)
    return present


def live_holders(client: SyncClient, groups: Sequence[tuple[int, ...]], keys: Keys,
                 alive: AliveCache | None = None) -> list[set[str]]:
    """For each group of users (a reply's `send_to`): the live presence ids holding one of them.

    One pipeline with one SUNION per distinct group (the replies of one room share theirs),
    not one SMEMBERS per user: a reply costs one command whatever its room's size. Then `_live`'s
    read of the heartbeats; dead ids found are removed from the sets of the groups they were
    found in (SREM of an id a set does not hold does nothing). RedisError propagates.
    """
    distinct = [group for group in dict.fromkeys(groups) if group]
    if not distinct:
        return [set() for _ in groups]
    pipe = client.pipeline(transaction=False)
    for group in distinct:
        # As a command, not `pipe.sunion`: redis-py's cluster pipeline refuses that method (a
        # multi-key command) though the keys share one slot (keys.py's hash tag), where it goes.
        pipe.execute_command("SUNION", *[keys.presence_user(user_pk) for user_pk in group])
    held = {group: {text(member) for member in members}
            for group, members in zip(distinct, pipe.execute(), strict=True)}
    found = set().union(*held.values())
    live = _live(client, found, keys, alive)
    if found - live:
        dead = found - live
        _forget_dead(client, {user_pk: ids & dead for group, ids in held.items() if ids & dead
                              for user_pk in group}, keys)
    return [held.get(group, set()) & live for group in groups]


def _live(client: SyncClient, presence_ids: set[str], keys: Keys, alive: AliveCache | None) -> set[str]:
    """The ids among these whose gateway's heartbeat exists: one MGET of those `alive` does not
    vouch for (none when it vouches for all)."""
    live = alive.known(presence_ids) if alive is not None else set()
    unread = sorted(presence_ids - live)
    if unread:
        heartbeats = client.mget([keys.presence_gateway(presence_id) for presence_id in unread])
        found = {presence_id for presence_id, heartbeat in zip(unread, heartbeats, strict=True) if heartbeat is not None}
        if alive is not None:
            alive.add(found)
        live |= found
    return live


def _forget_dead(client: SyncClient, dead_by_user: dict[int, set[str]], keys: Keys) -> None:
    # Safe against a race with the gateways: an id whose heartbeat is gone never comes back
    # (a gateway that finds its heartbeat lapsed registers under a new id), and a gateway
    # writes a new id's heartbeat before adding the id to any set.
    pipe = client.pipeline(transaction=False)
    for user_pk, dead in dead_by_user.items():
        pipe.srem(keys.presence_user(user_pk), *dead)
    try:
        pipe.execute()
    except REDIS_ERRORS as exc:
        # The answer is known already; the ids are removed by a later reader.
        logger.warning("could not remove dead presence ids of %d users: %s: %s",
                       len(dead_by_user), type(exc).__name__, exc)


class ReplyRoutes:
    """The topics each reply of a batch goes to: one presence read for the whole batch.

    `fallback_topic` is the deployment's `WORKER_RESPONSE_TOPIC`, which every gateway process
    reads: a reply goes there alone when presence cannot be read (Redis failing) or names a
    process by an id this reader cannot take apart. Alone, since a gateway that got it on its
    own topic too would deliver it twice.
    """

    def __init__(self, keys: Keys, fallback_topic: str, alive: AliveCache | None = None,
                 on_fallback: Callable[[int], None] | None = None) -> None:
        self.keys = keys
        self.fallback_topic = fallback_topic
        self.alive = alive if alive is not None else AliveCache()
        # Called with the number of replies sent to the fallback topic after a failed read.
        self.on_fallback = on_fallback

    def topics(self, client: SyncClient, replies: Sequence[tuple[Iterable[int], str | None]]) -> list[set[str]]:
        """For each `(send_to, reply_to)`: the reply topics of the live gateway processes that hold
        one of `send_to`, plus `reply_to` (the requesting process's, None for no requester).

        A reply whose recipients no gateway holds gets no topic but its `reply_to`. When Redis
        fails the read, every reply gets the fallback topic alone, logged and counted.
        """
        wanted = [tuple(send_to) for send_to, _ in replies]
        try:
            holders = live_holders(client, wanted, self.keys, self.alive)
        except REDIS_ERRORS as exc:
            logger.warning("presence not read (%s: %s): %d replies for several users go to %s, which every "
                           "gateway reads", type(exc).__name__, exc, len(replies), self.fallback_topic)
            if self.on_fallback is not None:
                self.on_fallback(len(replies))
            return [{self.fallback_topic} for _ in replies]
        topic_of: dict[str, str] = {}
        routed: list[set[str]] = []
        for presence_ids, (_, reply_to) in zip(holders, replies, strict=True):
            topics = {topic_of.get(presence_id) or topic_of.setdefault(presence_id, self._topic(presence_id))
                      for presence_id in presence_ids}
            if self.fallback_topic in topics:
                topics = {self.fallback_topic}
            elif reply_to is not None:
                topics.add(reply_to)
            routed.append(topics)
        return routed

    def _topic(self, presence_id: str) -> str:
        gateway_id = gateway_of(presence_id)
        if gateway_id is None:
            logger.warning("presence id %r names no gateway process; its users' replies go to %s",
                           presence_id[:80], self.fallback_topic)
            return self.fallback_topic
        return self.keys.gateway_reply_topic(gateway_id)

