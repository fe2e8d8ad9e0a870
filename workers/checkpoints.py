"""SQLite's WAL checkpoints in a thread of the worker's own, so that no request waits for one."""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

logger = logging.getLogger(__name__)

# How often the thread copies the WAL into the database file. A commit that takes the WAL past
# its connection's `wal_autocheckpoint` (project/settings.py) runs the checkpoint itself, and its
# request waits for every page copied and the fsyncs; this comes round often enough that, at the
# rates a worker sustains (docs/performance.md), the WAL stays short of that between two turns.
CHECKPOINT_INTERVAL = 0.5
# Passes in one turn: frames written during a pass are copied by the next.
CHECKPOINT_PASSES = 4
# A WAL copied to its end, with this many frames or more, is also checkpointed in RESTART mode, so
# that the next commit writes the WAL from its start again: under a steady load the commits alone
# seldom do so after a PASSIVE checkpoint, and the WAL would grow to their threshold. RESTART holds
# the commits back, but only while it copies the few frames written since the PASSIVE pass; it
# never waits for a reader (busy timeout 0) and is tried again at the next turn.
RESTART_FRAMES = 2000
# How long `stop` waits for a checkpoint under way (it does not wait for readers or writers).
STOP_TIMEOUT = 5.0


class WalCheckpointer:
    """A daemon thread that checkpoints the WAL every `interval` seconds on a connection of its own,
    so that no commit crosses its connection's `wal_autocheckpoint`; that threshold stays as the
    bound of the WAL should this thread fall behind or stop."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS, interval: float = CHECKPOINT_INTERVAL,
                 passes: int = CHECKPOINT_PASSES, restart_frames: int = RESTART_FRAMES) -> None:
        self.alias = alias
        self.interval = interval
        self.passes = passes
        self.restart_frames = restart_frames
        # Set after each turn that ran (tests wait on it); turns counts them.
        self.turned = threading.Event()
        self.turns = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)

    @classmethod
    def for_database(cls, alias: str = DEFAULT_DB_ALIAS) -> WalCheckpointer | None:
        """A checkpointer for the database `alias` if it is SQLite (others have no WAL of ours to copy), else None."""
        return cls(alias) if connections[alias].vendor == "sqlite" else None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL into the database file, in passes until one copied all it found or another
        connection's checkpoint is under way; return that pass's (frames in the WAL, frames copied),
        (-1, -1) when another checkpoint held it or the database is not in WAL mode."""
        busy, logged, copied = 0, -1, -1
        with connections[self.alias].cursor() as cursor:
            # Never wait for a lock here: what cannot be done now is done at the next turn.
            cursor.execute("PRAGMA busy_timeout = 0")
            for _ in range(self.passes):
                busy, logged, copied = self._run_checkpoint(cursor, "PASSIVE")
                if busy or logged == copied:
                    break
            if not busy and logged == copied and logged >= self.restart_frames:
                # Holds the commits back only while it copies what they wrote since the pass above.
                busy, logged, copied = self._run_checkpoint(cursor, "RESTART")
        return logged, copied

    @staticmethod
    def _run_checkpoint(cursor: Any, mode: str) -> tuple[int, int, int]:
        cursor.execute(f"PRAGMA wal_checkpoint({mode})")
        busy, logged, copied = cursor.fetchone()
        return busy, logged, copied

    def _run(self) -> None:
        # The boundary of the thread: a failed turn is logged and the next one tries again; a bug
        # ends the thread with its traceback, and the commits checkpoint the WAL themselves again.
        try:
            while not self._stopping.wait(self.interval):
                try:
                    self.checkpoint()
                except DatabaseError as exc:
                    logger.warning("WAL checkpoint failed (%s); the next in %.1fs", exc, self.interval)
                self.turns += 1
                self.turned.set()
        except Exception:
            logger.exception("the WAL checkpointer stopped; commits checkpoint the WAL themselves from now on")
        finally:
            connections[self.alias].close()
