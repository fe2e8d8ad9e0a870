"""`manage.py prune_changes [--every SECONDS]`: delete the change feed's changes older than
CHAT["SYNC_RETENTION_DAYS"] (chat.feed.prune), once, or every SECONDS until SIGTERM or SIGINT."""

from __future__ import annotations

import datetime
import math
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.utils import timezone

from chat import feed
from chat.conf import chat_settings


class _Stop(Exception):
    """SIGTERM or SIGINT while the command waited for its next run."""


class Schedule:
    """The waits between runs, which SIGTERM and SIGINT end: a signal that comes during a run lets
    it finish (a run is transactions, never cut short), one that comes during a wait ends the wait
    at once. Its handlers are installed on entry, the previous ones put back on exit."""

    def __init__(self) -> None:
        self.stop_requested = False
        self._waiting = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Schedule":
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True
        if self._waiting:
            self._waiting = False
            raise _Stop()

    def wait(self, seconds: float) -> bool:
        """Wait `seconds`; False when a stop was asked for, before or during the wait. A sleep that
        the handler interrupts by raising: a threading.Event set from a signal handler could wait on
        its own lock (see scripts/stack.py's StopRequest)."""
        try:
            try:
                self._waiting = True
                if self.stop_requested:
                    return False
                time.sleep(seconds)
            finally:
                self._waiting = False
        except _Stop:
            return False
        return not self.stop_requested


class Command(BaseCommand):
    help = ("Delete the change feed's changes older than SYNC_RETENTION_DAYS (sync from an earlier cursor then "
            "answers cursor_expired); once, or every SECONDS with --every until SIGTERM.")

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=None, metavar="SECONDS",
                            help="run again every SECONDS (at least 1) until SIGTERM or SIGINT, which end it between "
                                 "runs (default: run once)")

    def handle(self, *args, every: float | None, **options):
        if every is not None and not (math.isfinite(every) and every >= 1):
            raise CommandError(f"--every {every:g} is not a number of seconds >= 1")
        if every is None:
            self.prune()
            return
        with Schedule() as schedule:
            while True:
                self.prune()
                # No connection kept idle until the next run (the server may close it meanwhile).
                connections.close_all()
                if not schedule.wait(every):
                    return

    def prune(self) -> None:
        days = chat_settings.SYNC_RETENTION_DAYS
        before = timezone.now() - datetime.timedelta(days=days)
        pruned = feed.prune(before)
        self.stdout.write(f"pruned {pruned.changes} changes made before {before.isoformat(timespec='seconds')} "
                          f"(SYNC_RETENTION_DAYS={days})")
