"""The names the gateway's metrics may carry: the actions and error codes the workers published.

The gateway knows no domain action; the workers write their catalogue (`workers.actions`) to Redis
under `Keys.catalogue` each time they subscribe, and every gateway process reads it at start and
every REFRESH_INTERVAL seconds. A label outside it is `unknown` (an action) or `other` (a status),
so the series stay bounded whatever clients send; a catalogue past MAX_NAMES names is cut there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from .protocol import ANONYMOUS_ACTIONS, GATEWAY_ERROR_CODES
from .reconnect import REDIS_ERRORS, raise_if_cancel_requested

logger = logging.getLogger(__name__)

# How often a gateway process reads the catalogue again: an action a new worker brings is labelled
# by name within this long (before, as `unknown`). Until a first catalogue is found (the gateway
# started before any worker), every FIRST_READ_INTERVAL.
REFRESH_INTERVAL = 30.0
FIRST_READ_INTERVAL = 1.0
# The most action names, and error codes, that label a metric.
MAX_NAMES = 256
MAX_NAME_LENGTH = 64


class Catalogue:
    """Actions and error codes by name; the gateway's own are always in it."""

    def __init__(self) -> None:
        self.actions: frozenset[str] = frozenset(ANONYMOUS_ACTIONS)
        self.error_codes: frozenset[str] = GATEWAY_ERROR_CODES

    def action_label(self, action: Any) -> str:
        return action if isinstance(action, str) and action in self.actions else "unknown"

    def status_label(self, reply: dict[str, Any]) -> str:
        """`success`, the reply's error code if it is a known one, else `other`."""
        status = reply.get("status")
        if status == "success":
            return "success"
        code = reply.get("error_code")
        if status == "error" and isinstance(code, str) and code in self.error_codes:
            return code
        return "other"

    def load(self, raw: bytes | str | None) -> bool:
        """Take the catalogue a worker published; False (and nothing changed) if it is not one."""
        if raw is None:
            return False
        try:
            published = json.loads(raw)
            actions, codes = published["actions"], published["error_codes"]
            if not isinstance(actions, dict) or not isinstance(codes, list):
                raise TypeError("actions must be an object and error_codes a list")
        except (ValueError, TypeError, KeyError) as exc:
            logger.error("the action catalogue in Redis is not one (%s); labels stay as they are", exc)
            return False
        self.actions = frozenset(ANONYMOUS_ACTIONS) | _names(actions)
        self.error_codes = GATEWAY_ERROR_CODES | _names(codes)
        return True


def _names(values: Any) -> frozenset[str]:
    return frozenset([name for name in values if isinstance(name, str) and len(name) <= MAX_NAME_LENGTH][:MAX_NAMES])


async def keep_fresh(catalogue: Catalogue, read: Callable[[], Awaitable[bytes | None]],
                     interval: float = REFRESH_INTERVAL, first_interval: float = FIRST_READ_INTERVAL) -> None:
    """Read the catalogue now and every `interval` seconds (`first_interval` until one is found);
    Redis failing only delays the next read."""
    found = False
    while True:
        try:
            raw = await read()
            raise_if_cancel_requested()
            found = catalogue.load(raw) or found
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            logger.debug("action catalogue not read (%s)", exc)
        await asyncio.sleep(interval if found else first_interval)
