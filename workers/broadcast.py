"""The web process's publisher: puts a reply from the REST API on the bus for the gateways to deliver.

`chat.events` calls `publish` (through `settings.CHAT_EVENT_PUBLISHER`) with a reply in the
WebSocket protocol's form; it goes out as a worker's envelope for several users, on
`WORKER_RESPONSE_TOPIC`, which every gateway reads. `request_id` is null: no gateway waits for it.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.exceptions import RedisError

from chat.conf import chat_settings
from chat.events import PublishError

from . import envelopes

# Short timeouts: a request thread waits on them, and a missed live event costs little (clients
# catch up with sync) while a web worker stuck on a dead Redis costs every request behind it.
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 2.0

_client: redis.Redis | None = None
_client_lock = threading.Lock()


def _redis() -> redis.Redis:
    """One client (and connection pool) per process, made on first use; thread-safe."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = redis.Redis.from_url(chat_settings.REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT,
                                               socket_timeout=SOCKET_TIMEOUT)
    return _client


def envelope(response: dict[str, Any], send_to: list[int]) -> dict[str, Any]:
    """The bus envelope of a reply for every connection of `send_to`, as a worker sends it."""
    return envelopes.envelope({"request_id": None}, envelopes.HandlerResult(response, send_to=list(send_to)))


def publish(response: dict[str, Any], send_to: list[int]) -> None:
    """Publish `response` to every connection of the users `send_to`; raises PublishError."""
    encoded = envelopes.encode(envelope(response, send_to))
    try:
        _redis().publish(chat_settings.WORKER_RESPONSE_TOPIC, encoded)
    except (RedisError, OSError) as exc:
        raise PublishError(f"{type(exc).__name__}: {exc}") from exc
