"""Reading the web part's and the workers' settings from the environment: each value is checked,
and a bad one fails the start with an ImproperlyConfigured that names the variable.

The gateway parses its own settings (websockets_gateway.settings) with the same rules: an empty
value means "not set", so that compose's `${VAR:-}` and an unset variable agree.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Mapping
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    """The variable's value, stripped; None when unset or empty."""
    value = (os.environ if env is None else env).get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def env_str(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    value = _raw(name, env)
    return default if value is None else value


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, env)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1 or 0 (true/false, yes/no, on/off)")


def env_int(name: str, default: int, minimum: int, env: Mapping[str, str] | None = None) -> int:
    value = _raw(name, env)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} is below {minimum}")
    return number


def env_float(name: str, default: float, minimum: float, env: Mapping[str, str] | None = None) -> float:
    value = _raw(name, env)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name}={value!r} is not a finite number")
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} is below {minimum}")
    return number


def env_rate(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    """A REST framework throttle rate: a number of requests per s, m, h or d ("10/min", "30/s")."""
    value = env_str(name, default, env)
    count, _, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or not period or "/" in period or period[0] not in "smhd":
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate: a count per s, min, hour or day (10/min)")
    return value


def env_list(name: str, default: str, env: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list; blank items are dropped."""
    value = _raw(name, env)
    return [item.strip() for item in (default if value is None else value).split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...], env: Mapping[str, str] | None = None) -> str:
    value = env_str(name, default, env).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def env_log_level(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    value = env_str(name, default, env).upper()
    if not isinstance(logging.getLevelName(value), int):
        raise ImproperlyConfigured(f"{name}={value!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
    return value


def env_url(name: str, default: str, schemes: tuple[str, ...], env: Mapping[str, str] | None = None) -> str:
    """A URL with one of `schemes`; an empty default stays empty (nothing set, nothing checked).
    The messages leave the value out: a URL may hold a password."""
    value = env_str(name, default, env)
    if not value:
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not a URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ImproperlyConfigured(f"{name}: the scheme {parts.scheme!r} is not one of {', '.join(schemes)}")
    return value


def env_database(name: str, default: str, env: Mapping[str, str] | None = None, **options) -> dict:
    """Django's DATABASES entry from a database URL (dj-database-url's schemes: postgres://,
    sqlite:///…); `options` go to dj_database_url.parse. The message leaves the URL out."""
    try:
        return dj_database_url.parse(env_str(name, default, env), **options)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not a database URL: {exc}") from None
