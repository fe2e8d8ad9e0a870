"""The Redis keys the parts of one deployment share, each under that deployment's namespace.

Pure (no aiohttp, no Django): the gateway, the workers and `chat` spell every key through it.
The namespace is the deployment's `WORKER_RESPONSE_TOPIC`, which its gateways, workers and web
processes already agree on: two deployments on one Redis (staging beside production, or two test
stacks) never read each other's presence or workers. It is also the keys' hash tag, so on a Redis
Cluster every key below sits on one slot and each multi-key command or transaction on them stays
on one node.

It also spells the names the parts derive from a gateway process's id: its reply topic, its run id
(the id plus a token of this start of the process) and its presence ids (the run id plus an epoch),
so that a worker can go from a presence id back to the topic of the process that wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    namespace: str

    @property
    def _prefix(self) -> str:
        return f"chat:{{{self.namespace}}}"

    def presence_gateway(self, presence_id: str) -> str:
        """A string that exists while the gateway process of `presence_id` lives (its heartbeat)."""
        return f"{self._prefix}:presence:gateway:{presence_id}"

    def presence_user(self, user_pk: int) -> str:
        """The set of presence ids on which `user_pk` has an authenticated connection."""
        return f"{self._prefix}:presence:user:{user_pk}"

    @property
    def catalogue(self) -> str:
        """The workers' action catalogue (workers/actions.py), read by the gateways (catalogue.py)."""
        return f"{self._prefix}:catalogue"

    @property
    def worker_topics(self) -> str:
        """The set of the topics of the workers that registered (workers/discovery.py)."""
        return f"{self._prefix}:workers"

    def worker_heartbeat(self, topic: str) -> str:
        """A string that exists while the worker subscribed to `topic` lives."""
        return f"{self._prefix}:worker:{topic}"

    def gateway_reply_topic(self, gateway_id: str) -> str:
        """The topic a gateway process listens on for replies to it: its requests' `reply_to`, and
        the target of replies for several users of whom it holds one (chat/routing.py).

        A pub/sub channel, not a key: under the namespace so that two deployments' gateways never
        share one, but without the hash tag, so that a Redis Cluster spreads the gateways' topics
        over its masters.
        """
        return f"gateway_reply:{self.namespace}:{gateway_id}"


def run_id(gateway_id: str, token: str) -> str:
    """This start of a gateway process: its request ids and presence ids begin with it."""
    return f"{gateway_id}.{token}"


def presence_id(run: str, epoch: int) -> str:
    """The id under which a gateway process's presence is written (`{gateway_id}.{token}.{epoch}`)."""
    return f"{run}.{epoch}"


def gateway_of(presence: str) -> str | None:
    """The gateway id of a presence id, or None for one not spelled by `presence_id(run_id(…))`.

    Split from the right: a gateway id may hold dots, the token and the epoch never do.
    """
    parts = presence.rsplit(".", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0]


# The keys of a deployment left at the default WORKER_RESPONSE_TOPIC.
DEFAULT_KEYS = Keys("worker_response")
