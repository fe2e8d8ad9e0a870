"""The action registry: every action the workers answer, declared once, with everything about it.

An action is a handler with its rules: its name, whether it needs an authenticated user, the
validation of its fields, whether a client may send it again with the same uuid, and (for the
busiest) a handler that answers several requests together. Who gets the reply is the handler's
`HandlerResult`. The chat's own actions are declared in `workers.handlers`; any installed Django
app declares its own in a module `chat_actions.py`, found at start-up (`discover`):

    @action("echo", fields=EchoFields, retry=True)
    def echo(request: Request) -> HandlerResult:
        return HandlerResult(request.success(text=request.params["text"]))

The gateway knows none of this: it forwards every frame with a string `uuid` and `action`, and an
action missing here is answered `invalid_action` by the worker. The workers publish the catalogue
(`catalogue()`) in Redis for the gateway's metric labels, and every `authenticate` reply carries
its `actions` part, so that clients learn what they may retry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.utils.module_loading import autodiscover_modules
from rest_framework import serializers

from chat import errors
from websockets_gateway.wire import success_reply

from .envelopes import HandlerResult

# What an action may be called: short, lower case, as the protocol's own names.
ACTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# The gateway's own actions: never a worker's.
GATEWAY_ACTIONS = frozenset({"ping"})
# The module of an installed app in which it declares its actions.
ACTIONS_MODULE = "chat_actions"


@dataclass(frozen=True)
class Request:
    """A request from the bus: the client's frame (with the gateway's keys) and its user, if any."""

    data: dict[str, Any]
    user: AbstractBaseUser | None
    # Which of these user ids have an open, authenticated connection on some gateway (Redis).
    online: Callable[[Iterable[int]], set[int]] | None = None
    # The session's user id, unchecked: for an action that checks the account itself (loads_user=False).
    user_pk: int | None = None
    # The fields as the action's `fields` serializer validated them (empty without one).
    params: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def success(self, **fields: Any) -> dict[str, Any]:
        """The success reply to this request: its uuid, action and room, then `fields`."""
        return success_reply(self.data, **fields)


Handler = Callable[[Request], HandlerResult]
# Several requests of one action answered together: each one's result, or the exception it raised.
BatchHandler = Callable[[Sequence[Request]], list[HandlerResult | Exception]]


@dataclass(frozen=True)
class Action:
    name: str
    handler: Handler
    requires_user: bool = True
    # False: the handler gets the session's user id (Request.user_pk) and checks the account
    # itself, in a query it makes anyway, and answers authentication_required as dispatch would.
    loads_user: bool = True
    # Whether a client may send it again with the same uuid (after a timeout or a lost
    # connection) without anything happening twice: it only reads, ends in the same state however
    # often it runs, or finds what it stored by the uuid.
    retry: bool = False
    # A REST framework serializer for the frame's fields; what it refuses is answered
    # invalid_message_format. The chat's own actions validate in chat.fields instead, where the
    # REST API validates the same fields.
    fields: type[serializers.Serializer] | None = None
    # For requests of this action that arrive one after another in a batch: answers them together,
    # each as `handler` would have. If it raises, dispatch answers each again with `handler`: what
    # it did must be safe to do again (a stored message is found again by its uuid).
    batch: BatchHandler | None = None

    @property
    def module(self) -> str:
        """Where the action is declared."""
        return self.handler.__module__


class ActionRegistry:
    """Actions by name. Filled at import time; read on every request."""

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}
        self._catalogue: dict[str, Any] | None = None
        self._error_codes: frozenset[str] | None = None

    def register(self, action: Action) -> Action:
        if not ACTION_NAME.fullmatch(action.name) or action.name in GATEWAY_ACTIONS:
            raise ValueError(f"{action.name!r} cannot be an action's name: lower-case letters, digits and "
                             f"underscores, 64 at most, not one of the gateway's own ({sorted(GATEWAY_ACTIONS)})")
        declared = self._actions.get(action.name)
        if declared is not None and declared.handler is not action.handler:
            raise ValueError(f"action {action.name!r} is declared twice: in {declared.module} and {action.module}")
        self._actions[action.name] = action
        self._catalogue = self._error_codes = None
        return action

    def replace(self, action: Action) -> Action | None:
        """Put `action` in place of the one of its name (a test's stand-in); returns that one."""
        replaced = self._actions.get(action.name)
        self._actions[action.name] = action
        self._catalogue = self._error_codes = None
        return replaced

    def unregister(self, name: str) -> None:
        """Forget an action (a test's own, when it ends)."""
        del self._actions[name]
        self._catalogue = self._error_codes = None

    def get(self, name: Any) -> Action | None:
        return self._actions.get(name) if isinstance(name, str) else None

    def __contains__(self, name: Any) -> bool:
        return self.get(name) is not None

    def __iter__(self) -> Iterator[Action]:
        return iter(list(self._actions.values()))

    def __len__(self) -> int:
        return len(self._actions)

    def catalogue(self) -> dict[str, Any]:
        """What clients and the gateway learn: `{"actions": {name: {"retry": bool}}, "error_codes": [...]}`."""
        if self._catalogue is None:
            self._catalogue = {
                "actions": {action.name: {"retry": action.retry} for action in self._actions.values()},
                "error_codes": sorted(self.error_codes()),
            }
        return self._catalogue

    def error_codes(self) -> frozenset[str]:
        """Every error code a worker answers with (a host app's ChatErrors included)."""
        if self._error_codes is None:
            self._error_codes = frozenset(errors.codes())
        return self._error_codes

    def catalogue_json(self) -> str:
        return json.dumps(self.catalogue(), sort_keys=True, separators=(",", ":"))


registry = ActionRegistry()


def action(name: str, *, requires_user: bool = True, loads_user: bool = True, retry: bool = False,
           fields: type[serializers.Serializer] | None = None, batch: BatchHandler | None = None,
           into: ActionRegistry | None = None) -> Callable[[Handler], Handler]:
    """Declare the decorated function the handler of action `name` (in `registry`, or `into`)."""

    def declare(handler: Handler) -> Handler:
        (into if into is not None else registry).register(
            Action(name, handler, requires_user=requires_user, loads_user=loads_user, retry=retry,
                   fields=fields, batch=batch))
        return handler

    return declare


def discover() -> None:
    """Import the chat's own actions and every installed app's `chat_actions` module."""
    from . import handlers  # noqa: F401  (declares the chat's actions)

    autodiscover_modules(ACTIONS_MODULE)
