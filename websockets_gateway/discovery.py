"""The live workers' topics, read from the registry the workers keep in Redis (`workers/discovery.py`).

With `WORKER_PROCESS_TOPICS` unset, one task per gateway process reads the registry every
READ_INTERVAL: the set of registered topics and, in one MGET, their heartbeats. A topic whose
heartbeat is gone (a worker killed without a clean stop) is left out of the choice and removed
from the set; the others become the bus's worker topics (`bus.WorkerTopics.update`), whose
dead-topic handling still covers a worker gone between two reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable


from .bus import WorkerTopics
from .keys import Keys
from .redis_clients import REDIS_ERRORS, AsyncClient, text
from .reconnect import RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX, Backoff, raise_if_cancel_requested

logger = logging.getLogger(__name__)

# How often the registry is read: a worker that starts is used, and one that stopped cleanly is
# no longer tried, within this long.
READ_INTERVAL = 1.0
# The most topics one read takes (a random sample of the set when it holds more). Far above the
# workers one Redis serves (docs/deployment.md's sizing), it bounds the read's round trips, the
# MGET and the bus's list of topics; a set past it (dead topics piling up with no reader) shrinks
# read after read, since the dead ones of each sample are removed.
MAX_TOPICS = 1000



class WorkerDiscovery:
    """Keeps `topics` equal to the registry's live topics; `run` is its one background task."""

    def __init__(self, client: AsyncClient, keys: Keys, topics: WorkerTopics,
                 interval: float = READ_INTERVAL, max_topics: int = MAX_TOPICS) -> None:
        self.keys = keys
        self.topics = topics
        self.interval = interval
        self.max_topics = max_topics
        self._client = client
        # Set once the registry has been read: the app serves after it (or after its wait).
        self.ready = asyncio.Event()
        self.live: frozenset[str] = frozenset()

    async def read_once(self) -> frozenset[str]:
        """Read the registry, prune the dead topics, update the choice; return the live topics.

        Three round trips at most (the set with its size, the heartbeats, the removal of the dead
        ones); raises what Redis raised, the choice unchanged."""
        pipe = self._client.pipeline(transaction=False)
        pipe.scard(self.keys.worker_topics)
        pipe.srandmember(self.keys.worker_topics, self.max_topics)
        size, members = await pipe.execute()
        registered = sorted({text(member) for member in members})
        if size > self.max_topics:
            logger.warning("the worker registry holds %d topics; reading %d of them", size, self.max_topics)
        heartbeats = await self._client.mget([self.keys.worker_heartbeat(t) for t in registered]) if registered else []
        live = frozenset(t for t, beat in zip(registered, heartbeats, strict=True) if beat is not None)
        dead = [t for t in registered if t not in live]
        if dead:
            # A worker that registers again between the MGET and this SREM is removed with the
            # dead ones; its next refresh (a third of its TTL later) adds it back.
            await self._client.srem(self.keys.worker_topics, *dead)
            logger.info("worker registry: removed %d topics whose heartbeat expired: %s", len(dead), ", ".join(dead))
        self._set_live(live)
        return live

    async def run(self) -> None:
        """Read the registry every `interval` seconds forever; Redis failing keeps the last choice."""
        backoff = Backoff(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX)
        while True:
            raise_if_cancel_requested()
            try:
                await self.read_once()
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                delay = max(self.interval, backoff.next_delay())
                logger.warning("worker registry not read (%s: %s); keeping %d topics, reading again in %.1fs",
                               type(exc).__name__, exc, len(self.live), delay)
                await asyncio.sleep(delay)
                continue
            except Exception:
                # A bug, not Redis: logged with its traceback, and the task goes on reading.
                delay = max(self.interval, backoff.next_delay(jittered=False))
                logger.exception("worker registry: unexpected error; reading again in %.1fs", delay)
                await asyncio.sleep(delay)
                continue
            raise_if_cancel_requested()
            backoff.reset()
            self.ready.set()
            await asyncio.sleep(self.interval)

    def _set_live(self, live: frozenset[str]) -> None:
        if live != self.live:
            self._log_change(self.live, live)
        self.live = live
        self.topics.update(live)

    @staticmethod
    def _log_change(before: frozenset[str], after: frozenset[str]) -> None:
        def names(topics: Iterable[str]) -> str:
            return ", ".join(sorted(topics)) or "none"

        logger.info("live workers: %d (joined: %s; left: %s)", len(after), names(after - before),
                    names(before - after))
