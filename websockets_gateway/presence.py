"""Who is connected to this gateway process, written to Redis for the workers' `who_is_online`.

The keys (`keys.py`; the worker's reader, `workers/presence.py`, spells them through it too):

- `presence_gateway(presence_id)`: a string with a time to live of `PRESENCE_TTL`,
  refreshed every `PRESENCE_TTL / 3` seconds while this process lives. A presence id is
  alive exactly while its key exists, so a gateway killed with `kill -9` is forgotten at most
  `PRESENCE_TTL` seconds later.
- `presence_user(user_pk)`: a Redis set of the presence ids on which that user has at
  least one authenticated connection. A user is online iff one of them is alive.

`presence_id` is `{gateway_id}.{epoch}`, `gateway_id` being the id given to the writer: the app
gives it the process's id plus a token of this start of the process (app.py), so that the next
process to take the same id never keeps this one's entries alive. The epoch starts at 0 and goes up by one each time
this process registers again after a failed write (or after finding that its heartbeat had
lapsed): whatever it failed to remove meanwhile dies with the old id's key, and the new id
is given every user connected now, in one O(users) pass that only a recovery pays for.

The writer is state-based, not op-based: the registry marks a user dirty when the user's
number of connections here goes between 0 and non-zero, and one task writes, for each dirty
user, what is true at the time of writing (SADD or SREM) plus the heartbeat, in one
MULTI/EXEC pipeline. Three tabs of one user are one SADD; the SREM comes after the last one
closes.

`written(user_pk)` tells when Redis holds a user's presence here as it is now: the gateway holds
an `authenticate` reply until then (router.py), which is what makes a `sync` right after it
enough to miss nothing (docs/protocol.md, the bus section).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from . import metrics as metrics_module
from . import redis_clients
from .keys import DEFAULT_KEYS, Keys
from .keys import presence_id as spell_presence_id
from .metrics import GatewayMetrics
from .reconnect import (
    RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX, REDIS_ERRORS, Backoff, raise_if_cancel_requested,
)
from .registry import ConnectionRegistry

logger = logging.getLogger(__name__)

# Users written by one pipeline. A larger dirty set (a recovery, a burst of connections)
# takes several pipelines, one after the other, so no single command batch grows with traffic.
BATCH_SIZE = 1000
# How long the graceful-shutdown clean-up may take; past it the keys are left to their TTL.
WITHDRAW_TIMEOUT = 2.0
# The least time between two writes of users who came or went: the changes of that time go in
# one pipeline. A burst of connections (clients coming back after a gateway restart, say) is
# then a few transactions a second rather than one per user; presence lags by this much at most.
FLUSH_INTERVAL = 0.02


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class PresenceWriter:
    """Keeps this process's presence keys in Redis true; `run` is its one background task."""

    def __init__(self, registry: ConnectionRegistry, gateway_id: str, ttl: float,
                 redis_url: str = "redis://127.0.0.1:6379/0", client: redis_clients.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic, metrics: GatewayMetrics | None = None,
                 keys: Keys = DEFAULT_KEYS, cluster: bool = False) -> None:
        self.registry = registry
        self.keys = keys
        self.metrics = metrics if metrics is not None else metrics_module.detached()
        self.gateway_id = gateway_id
        self.ttl = ttl
        self.heartbeat_interval = ttl / 3
        self.epoch = 0
        # A write that hangs longer than a heartbeat interval is as good as failed.
        timeout = min(self.heartbeat_interval, 5.0)
        # On a Redis Cluster every key here shares one hash tag (keys.py), so each MULTI below
        # runs on the one master of that slot.
        self._client = client or redis_clients.async_client(
            redis_url, cluster, socket_timeout=timeout, socket_connect_timeout=min(timeout, 2.0))
        self._clock = clock
        # Users whose presence here may differ from what Redis holds. Bounded by the number
        # of distinct users (a user is in it at most once), whatever the churn of connections.
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        # Set while Redis holds this process's state: registered and no dirty user left.
        self.synced = asyncio.Event()
        # The current presence id's heartbeat was written and its users added.
        self._registered = False
        # A write failed (or the heartbeat lapsed) since the last registration: the next
        # registration takes a new epoch.
        self._lost = False
        # The last presence id that was fully registered: deleted once a newer one is.
        self._live_id: str | None = None
        self._last_write = 0.0
        self._heartbeat_value = f"{socket.gethostname()}:{os.getpid()}"
        # The users of the flush under way: taken out of `_dirty`, not written yet.
        self._writing: frozenset[int] = frozenset()
        # For each user someone waits on (`written`), the future the write of its presence
        # resolves; shared by that user's connections, so bounded by the users with a change
        # not yet written, like `_dirty`.
        self._written: dict[int, asyncio.Future[None]] = {}
        # Called once this process's presence is written again under a new epoch after it was
        # lost (a failed write, a lapsed heartbeat, `register_again`): replies for several users
        # routed meanwhile found no trace of this process in Redis and skipped it (chat/routing.py),
        # so the app tells its clients to `sync` (app.py). Never at the first registration.
        self.on_registered_again: Callable[[], None] | None = None

    @property
    def presence_id(self) -> str:
        return spell_presence_id(self.gateway_id, self.epoch)

    @property
    def dirty_users(self) -> frozenset[int]:
        return frozenset(self._dirty)

    def mark_dirty(self, user_pk: int) -> None:
        """The registry's hook: `user_pk` got its first or lost its last connection here. O(1)."""
        self._dirty.add(user_pk)
        self.synced.clear()
        self._wake.set()

    def register_again(self) -> None:
        """Write every user here again, under a new epoch, at once; then `on_registered_again`.

        For when Redis may have lost this process's keys without a write failing here: the bus's
        subscription came back after a gap, and a Redis restarted without persistence is empty.
        """
        self._registered = False
        self._lost = True
        self.synced.clear()
        self._wake.set()

    def written(self, user_pk: int) -> asyncio.Future[None] | None:
        """None when Redis already holds `user_pk`'s presence here as it is now; else a future
        that the write that puts it there resolves (never an exception: a failed write leaves it
        to the next one). The router holds an `authenticate` reply on it (router.py): a reply
        for the user that a worker routes after the client heard it was authenticated then
        finds this process in the user's set."""
        if self._registered and user_pk not in self._dirty and user_pk not in self._writing:
            return None
        waiter = self._written.get(user_pk)
        if waiter is None:
            waiter = self._written[user_pk] = asyncio.get_running_loop().create_future()
        return waiter

    def _resolve_written(self, users: Iterable[int]) -> None:
        """Release the waits on these users whose presence Redis now holds (not dirty again since)."""
        for user_pk in users:
            if user_pk in self._written and user_pk not in self._dirty:
                waiter = self._written.pop(user_pk)
                if not waiter.done():
                    waiter.set_result(None)

    async def run(self) -> None:
        """Write presence forever: at once when a user is dirty, else every heartbeat interval."""
        backoff = Backoff(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX)
        while True:
            raise_if_cancel_requested()
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                self.metrics.presence_errors.inc()
                logger.warning("presence %s: write failed (%s: %s); %d users waiting; retrying in %.1fs",
                               self.presence_id, type(exc).__name__, exc, len(self._dirty), backoff.current)
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception:
                # A bug, not Redis: logged, and retried like a failed write, so that presence
                # does not silently stop (and every user here turn offline with the heartbeat).
                self.metrics.presence_errors.inc()
                logger.exception("presence %s: unexpected error; retrying in %.1fs", self.presence_id, backoff.current)
                await asyncio.sleep(backoff.next_delay(jittered=False))
                continue
            raise_if_cancel_requested()
            backoff.reset()
            if self._registered and not self._dirty:
                self.synced.set()
                await self._wait_for_work()
            if self._registered and self._dirty:
                # More users changed meanwhile: gather them for a moment (see FLUSH_INTERVAL).
                await asyncio.sleep(min(FLUSH_INTERVAL, max(0.0, self._last_write + FLUSH_INTERVAL - self._clock())))

    async def sync_once(self) -> None:
        """One step: register (again) if needed, else write a batch of dirty users and the heartbeat.

        Raises what Redis raised; the state it leaves makes the next call repair everything.
        """
        try:
            if self._registered:
                await self._flush()
            else:
                await self._register()
        except Exception:
            self._registered = False
            self._lost = True
            raise

    async def withdraw(self, timeout: float = WITHDRAW_TIMEOUT) -> None:
        """On graceful shutdown: delete the heartbeat and our id from our users' sets, best effort.

        Deleting the heartbeat alone makes every reader see this process's users as gone; the
        SREMs only spare them the lazy clean-up. Call it after `run` is cancelled.
        """
        presence_id = self.presence_id
        users = sorted(set(self.registry.user_pks()) | self._dirty)
        try:
            await asyncio.wait_for(self._withdraw(presence_id, users), timeout)
        except (TimeoutError, *REDIS_ERRORS) as exc:
            logger.warning("presence %s: could not withdraw %d users (%s: %s); their entries expire in %.0fs",
                           presence_id, len(users), type(exc).__name__, exc, self.ttl)
        else:
            logger.info("presence %s: withdrawn (%d users)", presence_id, len(users))

    async def close(self) -> None:
        await self._client.aclose()

    async def _withdraw(self, presence_id: str, users: Sequence[int]) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(self.keys.presence_gateway(presence_id))
        if self._live_id is not None and self._live_id != presence_id:
            pipe.delete(self.keys.presence_gateway(self._live_id))
        await pipe.execute()
        for chunk in _chunks(users, BATCH_SIZE):
            pipe = self._client.pipeline(transaction=False)
            for user_pk in chunk:
                pipe.srem(self.keys.presence_user(user_pk), presence_id)
            await pipe.execute()

    async def _wait_for_work(self) -> None:
        delay = self._last_write + self.heartbeat_interval - self._clock()
        if delay <= 0:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass

    def _take_dirty(self) -> list[int]:
        self._wake.clear()
        if len(self._dirty) <= BATCH_SIZE:
            batch = list(self._dirty)
            self._dirty = set()
        else:
            batch = [self._dirty.pop() for _ in range(BATCH_SIZE)]
        return batch

    async def _flush(self) -> None:
        batch = self._take_dirty()
        self._writing = frozenset(batch)
        try:
            await self._write(batch)
        finally:
            self._writing = frozenset()

    async def _write(self, batch: list[int]) -> None:
        presence_id = self.presence_id
        pipe = self._client.pipeline(transaction=True)
        # XX: refresh, never create. A key that is gone had lapsed, and a worker may already
        # have removed this id from some users' sets; only a new id can be trusted again.
        pipe.set(self.keys.presence_gateway(presence_id), self._heartbeat_value, px=round(self.ttl * 1000), xx=True)
        for user_pk in batch:
            # What is true now, not what happened: connections may have come and gone since.
            if self.registry.of_user(user_pk):
                pipe.sadd(self.keys.presence_user(user_pk), presence_id)
            else:
                pipe.srem(self.keys.presence_user(user_pk), presence_id)
        try:
            results = await pipe.execute()
        except BaseException:
            self._dirty.update(batch)
            raise
        self._last_write = self._clock()
        if results[0] is None:
            logger.warning("presence %s: heartbeat had lapsed; registering %d users under a new id",
                           presence_id, self.registry.user_count())
            self._registered = False
            self._lost = True
            return
        self._resolve_written(batch)

    async def _register(self) -> None:
        if self._lost:
            self.epoch += 1
            self._lost = False
        presence_id = self.presence_id
        # The snapshot below covers every dirty user; changes from here on mark users again.
        covered, self._dirty = self._dirty, set()
        self._wake.clear()
        users = self.registry.user_pks()
        try:
            pipe = self._client.pipeline(transaction=True)
            # The heartbeat first: a reader never sees this id in a set while it has no key
            # (which it would take for a dead gateway's and remove).
            pipe.set(self.keys.presence_gateway(presence_id), self._heartbeat_value, px=round(self.ttl * 1000))
            await pipe.execute()
            for chunk in _chunks(users, BATCH_SIZE):
                pipe = self._client.pipeline(transaction=True)
                for user_pk in chunk:
                    pipe.sadd(self.keys.presence_user(user_pk), presence_id)
                await pipe.execute()
            if self._live_id is not None and self._live_id != presence_id:
                # Users that left while writes failed are still in sets under the old id:
                # they go offline now rather than when its key expires.
                await self._client.delete(self.keys.presence_gateway(self._live_id))
        except BaseException:
            self._dirty |= covered
            raise
        self._last_write = self._clock()
        self._registered = True
        again = self._live_id is not None and self._live_id != presence_id
        if again:
            logger.info("presence %s: registered again with %d users (was %s)", presence_id, len(users), self._live_id)
        else:
            logger.info("presence %s: registered with %d users", presence_id, len(users))
        self._live_id = presence_id
        if again and self.on_registered_again is not None:
            try:
                self.on_registered_again()
            except Exception:
                logger.exception("presence %s: the handler of a registration after a loss failed", presence_id)
        # Every user connected at the snapshot is written: the waits of those not dirty again end.
        if self._written:
            self._resolve_written(list(self._written))
