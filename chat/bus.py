"""The chat's publisher on the bus: sends a reply for several users, from any Django process (a REST
request, a task, a command), to the gateway processes that hold one of them (chat/routing.py), or to
`WORKER_RESPONSE_TOPIC`, which every gateway reads, when presence cannot be read.

It also holds the envelope's shape (docs/protocol.md, the bus section), which the workers' replies
use too (`workers.envelopes`), so a reply published here is exactly a worker's.
"""

from __future__ import annotations

import threading
from typing import Any

from websockets_gateway import redis_clients
from websockets_gateway.keys import Keys
from websockets_gateway.wire import dumps

from .conf import chat_settings
from .routing import ReplyRoutes

# Short timeouts: a request thread waits on them, and a missed live event costs little (clients
# catch up with sync) while a web worker stuck on a dead Redis costs every request behind it.
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 2.0

_client: redis_clients.SyncClient | None = None
_client_lock = threading.Lock()
_routes: ReplyRoutes | None = None


class PublishError(Exception):
    """A reply could not be handed to the bus (Redis down or too slow)."""


def envelope(request_id: str | None, response: dict[str, Any], send_to: list[int] | None,
             session_data: dict[str, Any] | None = None, ok: bool = True,
             requester_reply: bool = True) -> dict[str, Any]:
    """A reply as the bus carries it to the gateways: `send_to` None for the requester alone."""
    built = {
        "type": "success_response" if ok else "error_response",
        "request_id": request_id,
        "send_to": send_to,
        "session_data": session_data,
        "response": response,
    }
    if not requester_reply:
        built["requester_reply"] = False
    return built


def encode(built: dict[str, Any]) -> bytes:
    """An envelope as the bus carries it: compact UTF-8 JSON."""
    return dumps(built)


def _redis() -> redis_clients.SyncClient:
    """One client (and connection pool, or one per node of a cluster) per process, made on first
    use; thread-safe."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = redis_clients.sync_client(chat_settings.REDIS_URL, chat_settings.REDIS_CLUSTER,
                                                    socket_connect_timeout=CONNECT_TIMEOUT,
                                                    socket_timeout=SOCKET_TIMEOUT)
    return _client


def _reply_routes() -> ReplyRoutes:
    """One router (and its cache of live gateways) per process, for the deployment's namespace."""
    global _routes
    topic = chat_settings.WORKER_RESPONSE_TOPIC
    routes = _routes
    if routes is None or routes.fallback_topic != topic:
        routes = _routes = ReplyRoutes(Keys(topic), topic)
    return routes


def publish(response: dict[str, Any], send_to: list[int]) -> None:
    """Publish `response` to every connection of the users `send_to`, on every gateway.

    `request_id` is null: no gateway waits for it. The gateway processes that hold none of the
    users get nothing; none at all is published when no one of them is connected. Raises
    PublishError if Redis fails; a value JSON cannot write raises the encoder's TypeError before
    anything is sent.
    """
    recipients = list(send_to)
    encoded = encode(envelope(None, response, recipients))
    client = _redis()
    try:
        # Presence unreadable: the response topic alone (the router logs why); a Redis that is
        # down fails that publish too, which raises PublishError below.
        [topics] = _reply_routes().topics(client, [(recipients, None)])
        redis_clients.publish_all(client, [(topic, encoded) for topic in sorted(topics)])
    except redis_clients.REDIS_ERRORS as exc:
        raise PublishError(f"{type(exc).__name__}: {exc}") from exc
