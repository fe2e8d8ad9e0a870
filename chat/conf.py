"""The chat's settings: one dict in the host project's settings, `CHAT`, every key optional.

    CHAT = {"REDIS_URL": "redis://127.0.0.1:6379/0"}

`chat_settings.KEY` reads a key, or its default below. The dict is checked when the app starts
(`chat.apps.ChatConfig.ready`): an unknown key, or a value of the wrong kind, stops the start with
an `ImproperlyConfigured` naming the key. This repository's `project/settings.py` fills it from the
environment. The gateway never reads it: it is configured by environment (its own settings.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from websockets_gateway.redis_clients import cluster_from_env


def _url(schemes: tuple[str, ...], empty: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "a URL string"
        if empty and value == "":
            return None
        if urlsplit(value).scheme not in schemes:
            return f"a URL of scheme {', '.join(schemes)}{' (or empty)' if empty else ''}"
        return None

    return check


def _positive_int(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else "an integer >= 1"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def _seconds(value: Any) -> str | None:
    # At least a second: the worker refreshes its heartbeat every third of it, from a loop that
    # wakes twice a second.
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 1
    return None if ok else "a number of seconds >= 1"


def _name(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "a non-empty string"


def _dotted_or_callable(value: Any) -> str | None:
    return None if value is None or callable(value) or (isinstance(value, str) and "." in value) else \
        "a dotted path (module.name), a callable or None"


def _class_or_path(value: Any) -> str | None:
    return None if isinstance(value, type) or (isinstance(value, str) and "." in value) else \
        "a dotted path (module.Class) or a class"


def _days(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else \
        "a whole number of days >= 1"


def retention_from_env(env: Mapping[str, str] | None = None) -> int:
    """SYNC_RETENTION_DAYS from the environment: a whole number of days >= 1; unset or empty, 30;
    anything else is a ValueError."""
    env = os.environ if env is None else env
    value = (env.get("SYNC_RETENTION_DAYS") or "").strip()
    if not value:
        return SYNC_RETENTION_DAYS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"SYNC_RETENTION_DAYS={value!r} is not a whole number of days >= 1")
    return int(value)


# How long the change feed keeps a change (chat.feed.prune, manage.py prune_changes): a client away
# longer than that reloads instead of catching up with `sync`.
SYNC_RETENTION_DAYS = 30


@dataclass(frozen=True)
class Key:
    default: Any
    check: Callable[[Any], str | None]
    doc: str
    # Where the value comes from when CHAT does not set it, if not the default: the environment
    # setting that every part of a deployment reads alike.
    from_env: Callable[[], Any] | None = None

    def unset_value(self) -> Any:
        return self.from_env() if self.from_env is not None else self.default


KEYS: dict[str, Key] = {
    "REDIS_URL": Key("redis://127.0.0.1:6379/0", _url(("redis", "rediss", "unix")),
                     "the Redis the workers and the REST API's live events use"),
    "REDIS_CLUSTER": Key(False, _bool, "REDIS_URL names one node of a Redis Cluster (7 or later); unset: the "
                                       "REDIS_CLUSTER environment variable (1, true, yes or on)", cluster_from_env),
    "WORKER_RESPONSE_TOPIC": Key("worker_response", _name,
                                 "the topic replies for several users go on (the gateway's setting of that name)"),
    "WORKER_TTL": Key(10, _seconds,
                      "seconds a worker's registration outlives its last heartbeat: how late a worker killed "
                      "without a clean stop leaves the gateways' choice"),
    "MAX_MESSAGE_LENGTH": Key(4000, _positive_int, "the longest message text, in characters"),
    "TICKET_MAX_AGE": Key(60, _positive_int, "seconds a WebSocket ticket of the chat page is good for"),
    "GATEWAY_URL": Key("", _url(("ws", "wss"), empty=True),
                       "where the chat page opens its WebSocket; empty: the page's host, port 8080"),
    "POLICY": Key("chat.policy.Policy", _class_or_path,
                  "the permission policy: who may post, create rooms, add members, message whom (chat/policy.py)"),
    "DISPLAY_NAME": Key(None, _dotted_or_callable,
                        "a function of a user (dotted path or callable) returning the name shown for them; "
                        "None: the login name (`get_username()`)"),
    "SYNC_RETENTION_DAYS": Key(SYNC_RETENTION_DAYS, _days,
                               "days the change feed keeps a change (manage.py prune_changes deletes older ones): "
                               "`sync` from an older cursor answers cursor_expired; unset: the SYNC_RETENTION_DAYS "
                               "environment variable, else 30", retention_from_env),
    "BASE_TEMPLATE": Key("chat/base.html", _name, "the template the chat page extends (its blocks: title, body)"),
}


class ChatSettings:
    """`settings.CHAT` with its defaults; read again after a test changes the setting.

    Once read, each key is an attribute of the instance: the hot paths (a message's length check,
    the user's name) read it as a plain attribute, not through `__getattr__`."""

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in KEYS:
            raise AttributeError(f"CHAT has no key {name!r}")
        return self.values()[name]

    def values(self) -> dict[str, Any]:
        if self._values is None:
            self._values = check(getattr(settings, "CHAT", {}))
            self.__dict__.update(self._values)
        return self._values

    def reload(self) -> None:
        for name in KEYS:
            self.__dict__.pop(name, None)
        self._values = None


def check(configured: Any) -> dict[str, Any]:
    """The full settings from a `CHAT` dict, or ImproperlyConfigured naming what is wrong."""
    if not isinstance(configured, dict):
        raise ImproperlyConfigured(f"CHAT must be a dict, not {type(configured).__name__}")
    unknown = sorted(set(configured) - set(KEYS))
    if unknown:
        raise ImproperlyConfigured(f"CHAT has unknown keys {unknown}; its keys are {sorted(KEYS)}")
    values = {}
    for name, key in KEYS.items():
        if name not in configured:
            try:
                values[name] = key.unset_value()
            except ValueError as exc:
                raise ImproperlyConfigured(f"CHAT[{name!r}] is not set and {exc}") from exc
    for name, value in configured.items():
        problem = KEYS[name].check(value)
        if problem is not None:
            raise ImproperlyConfigured(f"CHAT[{name!r}] must be {problem}, not {value!r}")
        values[name] = value
    return values


chat_settings = ChatSettings()


@receiver(setting_changed)
def _reload(setting: str, **kwargs: Any) -> None:
    if setting == "CHAT":
        chat_settings.reload()
