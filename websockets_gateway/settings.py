"""The gateway's settings, read once from the environment."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from typing import Mapping

from .logs import LOG_FORMATS
from .redis_clients import cluster_from_env

# The chat page served by `manage.py runserver` / the launcher lives on port 8000.
DEFAULT_ALLOWED_ORIGINS = "http://localhost:8000,http://127.0.0.1:8000"


class SettingsError(ValueError):
    """A setting in the environment has a value the gateway cannot use."""


def _split(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _number(env: Mapping[str, str], name: str, default: str, kind: type, minimum: float) -> float | int:
    raw = env.get(name) or default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}") from exc
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} is below {minimum}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks (`10.0.0.5`, `10.0.0.0/8`, `fd00::/8`)."""
    networks = []
    for item in _split(env.get(name) or ""):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise SettingsError(f"{name}: {item!r} is not an IP address or network") from exc
    return tuple(networks)


# What a gateway id may hold: it names a Redis topic, Redis keys and a metrics label (identity.py
# reduces a host name to these too).
GATEWAY_ID_CHARACTERS = "A-Za-z0-9._-"
_GATEWAY_ID = re.compile(rf"[A-Za-z0-9][{GATEWAY_ID_CHARACTERS}]{{0,62}}")


def _gateway_id(env: Mapping[str, str]) -> str | None:
    value = (env.get("GATEWAY_ID") or "").strip()
    if value and not _GATEWAY_ID.fullmatch(value):
        raise SettingsError(f"GATEWAY_ID={value!r} is not 1 to 63 letters, digits, '.', '_' or '-' "
                            "(starting with a letter or digit)")
    return value or None


def _log_level(env: Mapping[str, str]) -> str:
    level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    if not isinstance(logging.getLevelName(level), int):
        raise SettingsError(f"LOG_LEVEL={level!r} is not a logging level")
    return level


def _redis_cluster(env: Mapping[str, str]) -> bool:
    try:
        return cluster_from_env(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


@dataclass(frozen=True)
class GatewaySettings:
    redis_url: str
    # The worker topics to choose from (WORKER_PROCESS_TOPICS); empty: the workers registered in
    # Redis, read by discovery.py.
    worker_topics: tuple[str, ...]
    response_topic: str
    # None means any origin (ALLOWED_ORIGINS="*").
    allowed_origins: frozenset[str] | None
    request_timeout: float
    auth_timeout: float
    ws_max_message_size: int
    # Requests of one connection that may wait for a worker at once.
    max_in_flight: int
    # Frames waiting to be written to one connection; a client that lets more pile up
    # is too slow to keep and is disconnected (close code 4008).
    send_queue_size: int
    # Token bucket per connection: frames per second, and the burst it may save up.
    rate_limit: float
    rate_burst: int
    ws_compression: bool
    ws_heartbeat: float
    # Open connections one gateway process accepts; past it the handshake answers 503, so a
    # flood of connections finds its limit here and not in the process's memory.
    max_connections: int
    # Open connections one gateway process accepts from one client address (0: no limit); past
    # it the handshake answers 503 too. The address is the one `trusted_proxies` gives.
    max_connections_per_ip: int
    # The proxies (addresses or networks) whose X-Forwarded-For names the client: with the
    # gateway behind one, the client's address is the right-most entry of that header not in
    # them; from any other peer the header is ignored. Empty: the peer is the client.
    trusted_proxies: tuple[Network, ...]
    # Seconds a gateway's presence entry outlives its last heartbeat (written every third of
    # it): how late a gateway killed without a clean shutdown stops counting its users online.
    presence_ttl: float
    # The first part of this process's gateway id, `<gateway_id>-<slot>` (identity.py); None: the
    # host name. It names the process's reply topic, presence keys and metrics series.
    gateway_id: str | None
    # Logging: the root level and `text` (for people) or `json` (one object a line, for machines).
    log_level: str
    log_format: str
    # REDIS_CLUSTER: `redis_url` names one node of a Redis Cluster (redis_clients.py).
    redis_cluster: bool = False

    @property
    def discovery(self) -> bool:
        """Whether the worker topics come from the registry in Redis (WORKER_PROCESS_TOPICS unset)."""
        return not self.worker_topics

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "GatewaySettings":
        env = os.environ if env is None else env
        raw_topics = (env.get("WORKER_PROCESS_TOPICS") or "").strip()
        topics = _split(raw_topics)
        if raw_topics and not topics:
            raise SettingsError("WORKER_PROCESS_TOPICS names no topic (leave it unset for the registered workers)")
        origins = _split(env.get("ALLOWED_ORIGINS", DEFAULT_ALLOWED_ORIGINS))
        return cls(
            redis_url=env.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            redis_cluster=_redis_cluster(env),
            worker_topics=topics,
            response_topic=env.get("WORKER_RESPONSE_TOPIC") or "worker_response",
            allowed_origins=None if "*" in origins else frozenset(origins),
            request_timeout=_number(env, "REQUEST_TIMEOUT", "10", float, 0.01),
            auth_timeout=_number(env, "AUTH_TIMEOUT", "10", float, 0.01),
            ws_max_message_size=_number(env, "WS_MAX_MESSAGE_SIZE", "65536", int, 128),
            max_in_flight=_number(env, "MAX_IN_FLIGHT", "32", int, 1),
            send_queue_size=_number(env, "SEND_QUEUE_SIZE", "256", int, 1),
            rate_limit=_number(env, "RATE_LIMIT", "30", float, 0.01),
            rate_burst=_number(env, "RATE_LIMIT_BURST", "60", int, 1),
            ws_compression=(env.get("WS_COMPRESSION") or "0").lower() in {"1", "true", "yes", "on"},
            ws_heartbeat=_number(env, "WS_HEARTBEAT", "30", float, 0),
            max_connections=_number(env, "MAX_CONNECTIONS", "10000", int, 1),
            max_connections_per_ip=_number(env, "MAX_CONNECTIONS_PER_IP", "0", int, 0),
            trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
            # Below a second, a heartbeat every third of it would lapse at any hiccup.
            presence_ttl=_number(env, "PRESENCE_TTL", "15", float, 1.0),
            gateway_id=_gateway_id(env),
            log_level=_log_level(env),
            log_format=_choice(env, "LOG_FORMAT", "text", LOG_FORMATS),
        )
