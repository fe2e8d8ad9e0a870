"""This worker's entry in the registry of live workers that the gateways pick a topic from.

The keys (`websockets_gateway.keys`; the gateways' reader, `websockets_gateway/discovery.py`):

- `worker_heartbeat(topic)`: a string with a time to live of `WORKER_TTL`, refreshed every
  `WORKER_TTL / 3` seconds from the consumer's loop. The worker on `topic` is alive exactly while
  it exists, so one killed with `kill -9` leaves the gateways' choice at most `WORKER_TTL` later.
- `worker_topics`: the set of the registered topics. A reader removes a topic whose heartbeat is
  gone; every refresh adds the topic again, so one removed by a reader that raced a refresh is
  back within `WORKER_TTL / 3`.

Both are written in one MULTI/EXEC (one slot, thanks to the keys' hash tag): a reader never sees
the topic in the set without its heartbeat, except once the heartbeat has expired.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable


from websockets_gateway.keys import Keys
from websockets_gateway.redis_clients import REDIS_ERRORS, SyncClient

logger = logging.getLogger(__name__)

# A topic taken by a worker started without --subscribe_topic begins with this.
TOPIC_PREFIX = "chat.worker."
# What a taken topic holds besides the prefix: it names a Redis channel, Redis keys and a metrics
# label, so nothing that would need quoting in any of them.
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
# The host name's part of a taken topic, at most this long: the pid and the random part make it
# unique, the host name only says where the worker runs.
HOST_PART_MAX = 40


def unique_topic(host: str | None = None, pid: int | None = None, token: str | None = None) -> str:
    """A topic no other worker holds: `chat.worker.<host>-<pid>-<random hex>`.

    The random part keeps two workers apart where host names and pids repeat (containers, where
    every worker may be pid 1 on a host called the same after a restart)."""
    host_part = _NOT_ALLOWED.sub("-", host if host is not None else socket.gethostname())[:HOST_PART_MAX]
    host_part = host_part.strip("-") or "worker"
    return f"{TOPIC_PREFIX}{host_part}-{pid if pid is not None else os.getpid()}-{token or secrets.token_hex(4)}"


class Registration:
    """Keeps `topic` in the registry while the worker runs; the consumer calls it from its loop.

    Not thread-safe: the consumer's one loop is its only user, on the consumer's own client.
    """

    def __init__(self, client: SyncClient, topic: str, keys: Keys, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = topic
        self.keys = keys
        self.ttl = ttl
        self.refresh_interval = ttl / 3
        self._client = client
        self._clock = clock
        # When the last registration was written; None: not registered (or a write failed).
        self._written_at: float | None = None
        self._heartbeat_value = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def registered(self) -> bool:
        return self._written_at is not None

    def register(self) -> None:
        """Write the heartbeat and add the topic to the set, in one transaction; raises what Redis raised."""
        self._written_at = None
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self.keys.worker_heartbeat(self.topic), self._heartbeat_value, px=round(self.ttl * 1000))
        pipe.sadd(self.keys.worker_topics, self.topic)
        pipe.execute()
        self._written_at = self._clock()

    def refresh(self, force: bool = False) -> None:
        """Register again when a third of the TTL has passed since the last write, when the last
        one failed, or at once with `force` (a new subscription: Redis may have restarted empty).

        A failure is logged and retried at the next call, not raised: the subscription is what
        serves requests, and its own probe finds a Redis that is gone. Meanwhile the heartbeat
        keeps the topic in the choice until it expires."""
        if not force and self._written_at is not None and self._clock() - self._written_at < self.refresh_interval:
            return
        try:
            self.register()
        except REDIS_ERRORS as exc:
            logger.warning("worker %s: registration not refreshed (%s: %s); it lapses %.0fs after the last one",
                           self.topic, type(exc).__name__, exc, self.ttl)

    def withdraw(self) -> None:
        """On a clean stop: leave the registry at once (best effort; else the entry expires)."""
        self._written_at = None
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.srem(self.keys.worker_topics, self.topic)
            pipe.delete(self.keys.worker_heartbeat(self.topic))
            pipe.execute()
        except REDIS_ERRORS as exc:
            logger.warning("worker %s: not withdrawn from the registry (%s: %s); it expires within %.0fs",
                           self.topic, type(exc).__name__, exc, self.ttl)
        else:
            logger.info("worker %s: withdrawn from the registry", self.topic)
