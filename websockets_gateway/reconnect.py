"""What every Redis reconnect loop shares: the backoff between attempts, the probe of a quiet
subscription, and closing a broken subscription without raising.

Pure and shared: no aiohttp, no Django, no I/O of its own (the caller reads the clock, sleeps,
sends the PING and closes), so the gateway's asyncio loops (`bus.py`, `presence.py`) and the
worker's synchronous one (`workers/consumer.py`) use the same code; `raise_if_cancel_requested`
is for the asyncio ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis.exceptions import RedisClusterException, RedisError

# What a Redis call may raise when Redis, or a cluster's node, is away: redis-py's cluster client
# raises RedisClusterException (no node reachable, a slot not served), which is no RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, RedisClusterException)

# The backoff of a loop that lost Redis: a blip is retried soon, a long outage at most every
# 2 s (3 s with jitter), so a Redis that comes back is found within a few seconds.
RECONNECT_BACKOFF_FIRST = 0.1
RECONNECT_BACKOFF_MAX = 2.0
# Each delay is spread over ±50 %: processes that lost Redis together do not all come back at once.
RECONNECT_JITTER = 0.5

# A subscription that has heard nothing for PROBE_INTERVAL seconds is sent a PING; one that has
# not answered it PROBE_TIMEOUT seconds later is on a dead connection (a partition that outlived
# it: neither end was told) and is made again. redis-py's own health check sends a PING but waits
# for no answer, and a subscription has no read timeout: without this, a gateway would never hear
# a reply again, and Redis would go on counting a dead worker's subscription, so every request
# published to its topic would time out.
PROBE_INTERVAL = 5.0
PROBE_TIMEOUT = 5.0
# The PING's argument: its answer comes back on the subscription as a pong carrying it.
PROBE_MESSAGE = b"chat-subscription-probe"


class SubscriptionDead(ConnectionError):
    """A subscription's connection did not answer its probe in time (see PROBE_INTERVAL)."""


class Backoff:
    """The delays between a loop's attempts: from `first`, doubled after each up to `cap`, each
    spread by ±`jitter` (a fraction); `reset` once an attempt has worked."""

    __slots__ = ("first", "cap", "jitter", "current", "_random")

    def __init__(self, first: float = RECONNECT_BACKOFF_FIRST, cap: float = RECONNECT_BACKOFF_MAX,
                 jitter: float = RECONNECT_JITTER, rng: Callable[[], float] | None = None) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"the backoff needs 0 < first <= cap, not {first} and {cap}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"the jitter is a fraction from 0 to 1, not {jitter}")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        # The delay the next attempt waits, before its jitter (what a log line says).
        self.current = first
        self._random = rng if rng is not None else random.random

    def next_delay(self, jittered: bool = True) -> float:
        """The time to wait before the next attempt; the one after it waits twice as long, up to the cap."""
        delay = self.current
        if jittered:
            delay *= 1 - self.jitter + 2 * self.jitter * self._random()
        self.current = min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.first


class SubscriptionProbe:
    """When a quiet subscription is due a PING, and when one unanswered means it is dead.

    Told each time the subscription hears anything (a message, or the pong of a probe), it
    answers, at each wake of the reading loop, whether to send a PING now, and raises
    SubscriptionDead once a PING sent has had no answer for `timeout` seconds.
    """

    __slots__ = ("interval", "timeout", "_heard", "_probed")

    def __init__(self, now: float, interval: float = PROBE_INTERVAL, timeout: float = PROBE_TIMEOUT) -> None:
        self.interval = interval
        self.timeout = timeout
        self._heard = now
        # When the PING waiting for its answer was sent; None when none waits.
        self._probed: float | None = None

    def heard(self, now: float) -> None:
        """The subscription heard something at `now`: it is alive, and any PING is answered."""
        self._heard, self._probed = now, None

    def ping_due(self, now: float) -> bool:
        """Whether to send a PING at `now` (it then counts as sent); raises SubscriptionDead when
        the one sent has waited for its answer for more than `timeout`."""
        if self._probed is not None:
            if now - self._probed > self.timeout:
                raise SubscriptionDead(f"no answer to a PING in {self.timeout:.0f}s")
            return False
        if now - self._heard >= self.interval:
            self._probed = now
            return True
        return False


def raise_if_cancel_requested() -> None:
    """In an asyncio loop around a Redis client, after each of its calls: on Python 3.11 an
    asyncio.wait_for inside the client can swallow a cancellation that lands just as its wait
    completes. The request is still counted on the task, so a loop that checks it ends anyway,
    instead of going on after its shutdown (and holding the shutdown up)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


@contextmanager
def closing_quietly(log: logging.Logger, what: str) -> Iterator[None]:
    """Around the close of a broken subscription, in a reconnect loop's `finally` (sync or async:
    `with closing_quietly(...): await pubsub.aclose()`): what the close raises is logged, never
    raised, since raising there would end the loop for good. A broken connection's errors are
    expected (DEBUG); any other is logged with its traceback. Cancellation goes through."""
    try:
        yield
    except REDIS_ERRORS as exc:
        log.debug("%s: %s", what, exc)
    except Exception:
        log.exception("%s failed", what)
