"""Parsing of request fields, shared by the bus workers and the REST API.

Each parser takes what a client sent (any JSON value) and returns the clean value or raises the
protocol's error: `invalid_message_format` for a value of the wrong type or out of range.
"""

from __future__ import annotations

import uuid
from typing import Any

from websockets_gateway import wire

from . import errors, users
from .conf import chat_settings

# A request that names users (create_room, add_members) names at most this many: one frame
# of 64 KiB holds about this many short usernames, and the worker checks them in one query.
MAX_USERNAMES = 500
# The longest login name looked up, unless the user model's login field allows longer (chat.users).
MAX_USERNAME_LENGTH = 150
MAX_ROOM_NAME_LENGTH = 200
# The longest reaction, in characters (the protocol's bound).
MAX_EMOJI_LENGTH = 32


def storable(value: str) -> bool:
    """Whether the database can hold this string: valid Unicode (JSON lets a client send a lone
    surrogate, "\\ud800", that no UTF-8 encoder takes) and no NUL (PostgreSQL text refuses it)."""
    return "\x00" not in value and wire.is_unicode(value)


def room_id(value: Any) -> uuid.UUID:
    """A room id as the protocol allows it: 32 hex digits or the hyphenated form."""
    if not isinstance(value, str):
        raise errors.InvalidMessageFormat("room must be a string")
    if len(value) not in (32, 36):
        raise errors.InvalidRoomId()
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.InvalidRoomId() from None


def client_uuid(value: Any) -> str | None:
    """A client's uuid for a request, 1..64 characters; absent (None) stays None."""
    if value is None:
        return None
    uuid_error = wire.uuid_error(value)
    if uuid_error is not None:
        raise errors.InvalidMessageFormat(uuid_error)
    if not storable(value):
        raise errors.InvalidMessageFormat("uuid must be valid Unicode without NUL characters")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise errors.InvalidMessageFormat("text must be a string")
    if not storable(value):
        raise errors.InvalidMessageFormat("text must be valid Unicode without NUL characters")
    if not value.strip():
        raise errors.EmptyText()
    if len(value) > chat_settings.MAX_MESSAGE_LENGTH:
        raise errors.TextTooLong(f"Message text is longer than {chat_settings.MAX_MESSAGE_LENGTH} characters")
    return value


def _is_int(value: Any) -> bool:
    # JSON true/false arrive as bool, which Python counts as int.
    return isinstance(value, int) and not isinstance(value, bool)


def message_id(value: Any, name: str, default: int | None = None) -> int | None:
    """A message id (a non-negative integer); absent (None) gives `default`."""
    if value is None:
        return default
    if not _is_int(value) or value < 0:
        raise errors.InvalidMessageFormat(f"{name} must be a message id (a non-negative integer)")
    return value


def required_message_id(value: Any, name: str) -> int:
    """A message id the request must name (`message_id` with no default)."""
    found = message_id(value, name)
    if found is None:
        raise errors.InvalidMessageFormat(f"{name} must be a message id (a non-negative integer)")
    return found


def emoji(value: Any) -> str:
    """An emoji as the protocol allows it: any string of 1..32 characters, not only white space."""
    if not isinstance(value, str):
        raise errors.InvalidMessageFormat("emoji must be a string")
    if not storable(value):
        raise errors.InvalidMessageFormat("emoji must be valid Unicode without NUL characters")
    if not 1 <= len(value) <= MAX_EMOJI_LENGTH or value.isspace():
        raise errors.InvalidEmoji()
    return value


def limit(value: Any, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not _is_int(value) or not 1 <= value <= maximum:
        raise errors.InvalidMessageFormat(f"limit must be an integer from 1 to {maximum}")
    return value


def room_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidMessageFormat("name must be a non-empty string")
    if not storable(value):
        raise errors.InvalidMessageFormat("name must be valid Unicode without NUL characters")
    name = value.strip()
    if len(name) > MAX_ROOM_NAME_LENGTH:
        raise errors.InvalidMessageFormat(f"name must be at most {MAX_ROOM_NAME_LENGTH} characters")
    return name


def username(value: Any, name: str = "to") -> str:
    """A user's login name (the user model's USERNAME_FIELD)."""
    if not isinstance(value, str) or not value:
        raise errors.InvalidMessageFormat(f"{name} must be a username")
    # Too long, or not storable: no user has that name.
    if len(value) > max(MAX_USERNAME_LENGTH, users.login_max_length()) or not storable(value):
        raise errors.InvalidUser()
    return value


def usernames(value: Any) -> list[str]:
    """A list of usernames, each once, in the order first given."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise errors.InvalidMessageFormat("members must be a list of usernames")
    if len(value) > MAX_USERNAMES:
        raise errors.InvalidMessageFormat(f"members names at most {MAX_USERNAMES} users")
    for name in value:
        if not storable(name):  # no user has that name
            raise errors.InvalidUser(f"No user named {name[:40]!r}")
    return list(dict.fromkeys(value))
