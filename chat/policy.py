"""The permission policy: a host project's decision on top of the chat's own rules.

`CHAT["POLICY"]` names a class (a dotted path, or the class) with the four methods of `Policy`;
each returns True to allow. The chat's own checks come first (a non-member still gets
`invalid_room_id`, a malformed field its error); the policy is asked last, just before anything is
stored, and a False is the `forbidden` error (`chat.errors.Forbidden`). The default allows
everything and reads nothing. The class is loaded once, and again when `CHAT` changes.
See docs/policy.md.
"""

from __future__ import annotations

from typing import Any, Sequence

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import errors
from .conf import chat_settings

DECISIONS = ("can_post", "can_create_room", "can_add_members", "can_direct_message")


class Policy:
    """Allows everything the chat's own rules allow. Subclass it and override what you restrict.

    The users and rooms given may hold only some of their fields (the busiest path reads only a
    user's id and username, a room's id): any other field a method reads costs a query.
    """

    def can_post(self, user: Any, room: Any) -> bool:
        """`user`, a member of `room`, posts a message there (`new_message`)."""
        return True

    def can_create_room(self, user: Any, members: Sequence[Any]) -> bool:
        """`user` creates a room with `members`, the other users named (`create_room`)."""
        return True

    def can_add_members(self, user: Any, room: Any, new_members: Sequence[Any]) -> bool:
        """`user`, a member of `room` (not a direct one), adds the users named; some may be members
        already (`add_members`)."""
        return True

    def can_direct_message(self, user: Any, other: Any) -> bool:
        """`user` sends a message to `other` in the direct room of the two (`direct_message`)."""
        return True


_loaded: tuple[Any, Any] | None = None  # (the configured value, its instance)


def current() -> Any:
    """The policy CHAT["POLICY"] names, an instance made once per configured value."""
    global _loaded
    configured = chat_settings.POLICY
    loaded = _loaded
    if loaded is not None and loaded[0] == configured:
        return loaded[1]
    instance = load(configured)
    _loaded = (configured, instance)
    return instance


def decides(instance: Any, decision: str) -> bool:
    """Whether `instance`'s class decides `decision` itself (overrides the default, which allows
    all): where it does not, a hot path (posting) skips building what the decision would get."""
    return getattr(type(instance), decision) is not getattr(Policy, decision)


def load(configured: Any) -> Any:
    """An instance of the policy class `configured` names; ImproperlyConfigured naming the key if
    it does not import, is not a class, or lacks one of the decisions."""
    kind = configured
    if isinstance(configured, str):
        try:
            kind = import_string(configured)
        except ImportError as exc:
            raise ImproperlyConfigured(f"CHAT['POLICY'] {configured!r} cannot be imported: {exc}") from exc
    if not isinstance(kind, type):
        raise ImproperlyConfigured(f"CHAT['POLICY'] must name a class, not {kind!r}")
    missing = [name for name in DECISIONS if not callable(getattr(kind, name, None))]
    if missing:
        raise ImproperlyConfigured(f"CHAT['POLICY'] {kind.__qualname__} lacks {missing}")
    return kind()


def require(allowed: bool) -> None:
    """Raise `forbidden` unless the policy allowed the request."""
    if not allowed:
        raise errors.Forbidden()
