"""Pings idle connections and drops the ones that stopped answering, from one timer per process.

aiohttp's own heartbeat (`WebSocketResponse(heartbeat=...)`) keeps a timer, and while a ping
waits for its pong a second one, for every connection: about 0.8 KiB of an idle connection's
memory, and one entry per connection in the event loop's timer heap. Here every connection sits
in one of `BUCKETS` sets, visited in turn, one bucket each `interval / 4 / BUCKETS` seconds, so
each connection is visited every quarter interval, and a visit costs a few attribute reads. A
connection costs an entry in its bucket (which also counts its visits without a frame) and the
one flag of its own that the handler sets on every frame, `Connection.heard`.

The rules, per connection (as aiohttp's, to a quarter interval):
- any frame it sends (a pong included) counts as hearing from it (`Connection.heard`);
- nothing heard for `interval`: it is sent a ping;
- nothing heard for half an interval more: it is dropped (the socket is aborted; a peer that
  does not answer a ping would not take a close frame either), logged and counted under 1006.
"""

from __future__ import annotations

import asyncio
import logging

from .connection import Connection

logger = logging.getLogger(__name__)

BUCKETS = 16
VISITS_PER_INTERVAL = 4
MIN_TICK = 0.005
# Visits in a row without a frame: the ping goes out at the fourth (idle for an interval), the
# connection is dropped at the sixth (the ping unanswered for half an interval).
PING_AFTER_VISITS = VISITS_PER_INTERVAL
DROP_AFTER_VISITS = VISITS_PER_INTERVAL + VISITS_PER_INTERVAL // 2


class Heartbeat:
    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("the heartbeat interval must be positive")
        self.interval = interval
        # Not below MIN_TICK: a heartbeat of a fraction of a second (a test's) would wake the loop
        # thousands of times a second; its visits then come a little later than a quarter interval.
        self.tick = max(interval / VISITS_PER_INTERVAL / BUCKETS, MIN_TICK)
        # Each bucket maps its connections to their visits in a row without a frame.
        self._buckets: list[dict[Connection, int]] = [{} for _ in range(BUCKETS)]
        self._next = 0  # the bucket the next tick visits

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets)

    def add(self, conn: Connection) -> None:
        """Watch a connection: its first visit is a quarter interval away (a full turn of the buckets)."""
        conn.heard = True
        self._buckets[(self._next - 1) % BUCKETS][conn] = 0

    def bucket_of(self, conn: Connection) -> int | None:
        """The bucket that watches `conn` (None: not watched); a look in each of the BUCKETS."""
        for index, bucket in enumerate(self._buckets):
            if conn in bucket:
                return index
        return None

    def discard(self, conn: Connection) -> None:
        index = self.bucket_of(conn)
        if index is not None:
            del self._buckets[index][conn]

    def visit_next_bucket(self) -> None:
        """One tick: visit the connections of the next bucket."""
        bucket = self._buckets[self._next]
        self._next = (self._next + 1) % BUCKETS
        for conn, unheard_visits in list(bucket.items()) if bucket else ():
            if conn.closed:
                continue  # closing: its handler ends and discards it
            if conn.heard:
                conn.heard = False
                bucket[conn] = 0
                continue
            unheard_visits += 1
            if unheard_visits >= DROP_AFTER_VISITS:
                logger.info("no frame within %.3g s of a ping: dropping the connection", self.interval / 2,
                            extra=conn.log_context)
                del bucket[conn]
                conn.drop()
                continue
            bucket[conn] = unheard_visits
            if unheard_visits == PING_AFTER_VISITS:
                conn.ping()

    async def run(self) -> None:
        """Visit a bucket every tick, forever (cancel to stop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += self.tick
            # Scheduled by deadline, not by sleep length: a late tick does not push every later one.
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            try:
                self.visit_next_bucket()
            except Exception:
                logger.exception("heartbeat visit failed; going on with the next bucket")
