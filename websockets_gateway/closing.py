"""A connection's close handshake, bounded: a client that does not take the close frame in time
has its socket aborted, so it never holds a handler or memory."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

logger = logging.getLogger(__name__)


async def close_handshake(ws: Any, code: int, reason: str, timeout: float, abort: Callable[[], None] | None,
                          log_context: dict[str, Any]) -> None:
    """Close `ws` with `code`, waiting at most `timeout` for the client's Close reply; on any outcome
    but a clean close, call `abort` (the transport's: no handshake, the socket is gone).

    Never raises, except the cancellation of the task that runs it.
    """
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()), timeout)
        return
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        # Not this task's cancellation: a waiter on aiohttp's shared drain future was cancelled
        # elsewhere (a handler cancelled in a pong, say), and the handshake with it.
        logger.warning("close handshake (%d) interrupted: aborting the socket", code, extra=log_context)
    except TimeoutError:
        logger.warning("close handshake (%d) took over %.0fs: aborting the socket", code, timeout, extra=log_context)
    except Exception:
        logger.exception("error while closing with %d: aborting the socket", code, extra=log_context)
    if abort is not None:
        abort()
