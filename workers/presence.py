"""Reads from Redis which users have an open, authenticated connection on any gateway (`who_is_online`).

The gateways write it (`websockets_gateway/presence.py`); both sides spell the keys through
`websockets_gateway.keys` (a contract test checks that they meet):

- `presence_gateway(presence_id)`: exists while that gateway process is alive; it
  expires `PRESENCE_TTL` seconds after the process's last heartbeat.
- `presence_user(user_pk)`: the set of presence ids on which the user has at least one
  authenticated connection.

A user is online iff one of its presence ids is alive. Ids of dead gateways found on the way
are removed from the users' sets, so that they do not pile up after crashes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from websockets_gateway.keys import DEFAULT_KEYS, Keys
from websockets_gateway.redis_clients import REDIS_ERRORS, SyncClient

logger = logging.getLogger(__name__)

def online_user_ids(client: SyncClient, user_ids: Iterable[int], keys: Keys = DEFAULT_KEYS) -> set[int]:
    """The users among `user_ids` with a connection on a live gateway.

    Two round trips (one pipeline of SMEMBERS, one MGET of the heartbeats), a third only when
    dead presence ids are found; none for no users. On a Redis Cluster every key here shares one
    hash tag (keys.py), so the MGET is one slot's. A Redis error propagates: the caller answers
    with an error reply.
    """
    users = list(dict.fromkeys(user_ids))
    if not users:
        return set()
    pipe = client.pipeline(transaction=False)
    for user_pk in users:
        pipe.smembers(keys.presence_user(user_pk))
    ids_by_user = {user_pk: {_text(member) for member in members}
                   for user_pk, members in zip(users, pipe.execute(), strict=True)}

    presence_ids = sorted(set().union(*ids_by_user.values()))
    if not presence_ids:
        return set()
    heartbeats = client.mget([keys.presence_gateway(presence_id) for presence_id in presence_ids])
    alive = {presence_id for presence_id, heartbeat in zip(presence_ids, heartbeats, strict=True) if heartbeat is not None}

    online: set[int] = set()
    dead_by_user: dict[int, set[str]] = {}
    for user_pk, ids in ids_by_user.items():
        if ids & alive:
            online.add(user_pk)
        if ids - alive:
            dead_by_user[user_pk] = ids - alive
    if dead_by_user:
        _forget_dead(client, dead_by_user, keys)
    return online


def _forget_dead(client: SyncClient, dead_by_user: dict[int, set[str]], keys: Keys) -> None:
    # Safe against a race with the gateways: an id whose heartbeat is gone never comes back
    # (a gateway that finds its heartbeat lapsed registers under a new id), and a gateway
    # writes a new id's heartbeat before adding the id to any set.
    pipe = client.pipeline(transaction=False)
    for user_pk, dead in dead_by_user.items():
        pipe.srem(keys.presence_user(user_pk), *dead)
    try:
        pipe.execute()
    except REDIS_ERRORS as exc:
        # The answer is known already; the ids are removed by a later reader.
        logger.warning("could not remove dead presence ids of %d users: %s: %s",
                       len(dead_by_user), type(exc).__name__, exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
