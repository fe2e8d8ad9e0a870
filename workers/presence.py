"""Reads from Redis which users have an open, authenticated connection on any gateway (`who_is_online`).

The gateways write it (`websockets_gateway/presence.py`); the read is `chat.routing.live_presence`,
which the replies for several users are routed by too. A user is online iff one of its presence
ids is alive: its gateway's heartbeat key exists. Ids of dead gateways found on the way are
removed from the users' sets, so that they do not pile up after crashes.
"""

from __future__ import annotations

from collections.abc import Iterable

from chat.routing import live_presence
from websockets_gateway.keys import DEFAULT_KEYS, Keys
from websockets_gateway.redis_clients import SyncClient


def online_user_ids(client: SyncClient, user_ids: Iterable[int], keys: Keys = DEFAULT_KEYS) -> set[int]:
    """The users among `user_ids` with a connection on a live gateway.

    Two round trips (one pipeline of SMEMBERS, one MGET of the heartbeats), a third only when
    dead presence ids are found; none for no users. Every heartbeat is read: no cache, so a
    gateway that shut down a moment ago is not counted. RedisError propagates: the caller
    answers with an error reply.
    """
    return set(live_presence(client, user_ids, keys))
