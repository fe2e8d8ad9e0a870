"""The REST API's throttles (REST framework's, by scope; rates in REST_FRAMEWORK's
DEFAULT_THROTTLE_RATES): a request over its rate is answered 429 with a `Retry-After` header."""

from __future__ import annotations

import math
from typing import Any

from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle


class LoginRateThrottle(SimpleRateThrottle):
    """Password logins per client address, logged in or not: a session does not buy more guesses
    (REST framework's AnonRateThrottle lets every authenticated request through)."""

    scope = "login"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class WriteRateThrottle(UserRateThrottle):
    """A user's writes (POST, PUT, PATCH, DELETE), whatever the client or credential, at the
    WebSocket's frame rate (RATE_LIMIT). Per user when authenticated, else per address."""

    scope = "write"


def retry_after(throttle: SimpleRateThrottle) -> str:
    """The `Retry-After` value for a refusal by `throttle`: whole seconds, as REST framework sends."""
    wait = throttle.wait()
    return str(math.ceil(wait) if wait is not None else 1)
