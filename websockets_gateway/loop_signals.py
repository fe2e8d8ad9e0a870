"""Signals that came before the event loop ran: handled once it does.

gunicorn's aiohttp workers add their SIGTERM handler to the event loop before importing the
app, and only then run the loop. asyncio's loop takes a signal at any time: its handler writes
the signal's number to the loop's wakeup fd. uvloop listens on that fd only while it runs; a
signal that comes before (a stop during a deploy, while the process is still importing) is only
noted, and handled when the next signal wakes the loop. The process would serve on until its
graceful timeout ran out and gunicorn killed it, with no clean-up: no 1001 for its clients, its
presence left to expire.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading


def handle_noted_signals(loop: asyncio.AbstractEventLoop) -> bool:
    """Make a running uvloop loop handle the signals it noted before it ran; return whether it
    was asked to (a no-op on asyncio's loop, and outside the main thread, where no loop takes
    signals).

    A null byte on the loop's wakeup fd wakes uvloop's signal reader, which then handles every
    signal it noted and skips the byte. Reading the fd means setting it to -1 for an instant: a
    signal in that instant still reaches uvloop's Python-level handler, which notes it, so it is
    handled with the rest.
    """
    if not type(loop).__module__.startswith("uvloop") or threading.current_thread() is not threading.main_thread():
        return False
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    if fd == -1:
        return False
    try:
        os.write(fd, b"\0")
    except BlockingIOError:
        # The wakeup socket is full of signal numbers already: the loop is about to read them.
        pass
    return True
