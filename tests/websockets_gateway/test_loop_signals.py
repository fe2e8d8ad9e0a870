"""A signal that comes before the event loop runs is handled once it does (loop_signals.py).

The handler is added and the signal raised before the loop runs, as in gunicorn's aiohttp
workers when a stop comes while the app is being imported.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import pytest

from websockets_gateway.loop_signals import handle_noted_signals

uvloop = pytest.importorskip("uvloop")

# A bound on the wait for the handler: a signal that is never handled fails, it never blocks.
WAIT = 10.0
# Loop iterations in which a signal nothing woke the loop for stays unhandled.
ITERATIONS = 20


def _signal_before_run(new_loop: Callable[[], asyncio.AbstractEventLoop], flush: bool,
                       expect_handled: bool = True) -> tuple[bool, bool]:
    """Return whether `handle_noted_signals` asked the loop to look, and whether the handler ran:
    waited for if expected, else looked for after a few loop iterations."""
    loop = new_loop()
    handled = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGUSR2, handled.set)
        signal.raise_signal(signal.SIGUSR2)

        async def main() -> tuple[bool, bool]:
            asked = handle_noted_signals(asyncio.get_running_loop()) if flush else False
            if expect_handled:
                await asyncio.wait_for(handled.wait(), WAIT)
            else:
                for _ in range(ITERATIONS):
                    await asyncio.sleep(0)
            return asked, handled.is_set()

        return loop.run_until_complete(main())
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
        loop.close()


def test_uvloop_notes_a_signal_that_came_before_it_ran_without_handling_it():
    # What the module is for: without it the handler does not run (uvloop 0.23, pinned).
    assert _signal_before_run(uvloop.new_event_loop, flush=False, expect_handled=False) == (False, False)


def test_uvloop_handles_the_noted_signal_once_asked():
    assert _signal_before_run(uvloop.new_event_loop, flush=True) == (True, True)


def test_asyncio_loop_handles_it_anyway_and_is_left_alone():
    assert _signal_before_run(asyncio.new_event_loop, flush=True) == (False, True)
    assert _signal_before_run(asyncio.new_event_loop, flush=False) == (False, True)


def test_nothing_to_do_outside_the_main_thread():
    async def main() -> bool:
        return await asyncio.to_thread(_in_thread)

    def _in_thread() -> bool:
        loop = uvloop.new_event_loop()
        try:
            return loop.run_until_complete(_ask())
        finally:
            loop.close()

    async def _ask() -> bool:
        return handle_noted_signals(asyncio.get_running_loop())

    assert asyncio.run(main()) is False
