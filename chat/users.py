"""Users as the chat names them, whatever the project's user model (`AUTH_USER_MODEL`).

On the wire a user is `{"username": NAME}`: NAME is the display name, `CHAT["DISPLAY_NAME"](user)`
when that setting names a function, else the login name (`user.get_username()`, the value of the
model's `USERNAME_FIELD`). Requests that name users (create_room, add_members, direct_message) are
looked up by the login name always: the display name is for showing, and need not be unique.
The model needs a boolean `is_active` field: deactivated users are refused.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from .conf import chat_settings

User = get_user_model()
# The login name's field (`username`, `email`, ...), resolved once: the hot paths' statements select it.
LOGIN_FIELD: str = User.USERNAME_FIELD
LOGIN_ATTNAME: str = User._meta.get_field(LOGIN_FIELD).attname
# Where the login field sets no max_length: the longest name a request may give.
DEFAULT_MAX_LENGTH = 150

# The DISPLAY_NAME setting as last resolved: (the setting, its function).
_resolved: tuple[Any, Callable[[Any], Any] | None] = (None, None)


class Named(NamedTuple):
    """A user as the room summaries show them: the id and the name on the wire (a user instance
    serializes the same)."""

    pk: int
    name: str


def login_max_length() -> int:
    return User._meta.get_field(LOGIN_FIELD).max_length or DEFAULT_MAX_LENGTH


def display_function() -> Callable[[Any], Any] | None:
    """DISPLAY_NAME's function (imported from its dotted path once), or None when unset."""
    global _resolved
    setting = chat_settings.DISPLAY_NAME
    if setting is None:
        return None
    if _resolved[0] != setting:
        _resolved = (setting, import_string(setting) if isinstance(setting, str) else setting)
    return _resolved[1]


def display_name(user: Any) -> str:
    """The name `user` (an instance of the user model, or a `Named`) goes by on the wire."""
    if isinstance(user, Named):
        return user.name
    function = display_function()
    return user.get_username() if function is None else str(function(user))


def names_of(memberships: QuerySet, *, ordered: bool = False) -> Iterable[tuple[Any, int, str]]:
    """`(room_id, user_id, name on the wire)` of each of these memberships, in one query; `ordered`
    by name. Without DISPLAY_NAME, plain rows with the login name (a user in 200 rooms of 10 has
    2,000 of them, ordered by the database); with it, the users come along and are named here."""
    if display_function() is None:
        login = f"user__{LOGIN_FIELD}"
        rows = memberships.values_list("room_id", "user_id", login)
        return rows.order_by(login) if ordered else rows
    named = [(membership.room_id, membership.user_id, display_name(membership.user))
             for membership in memberships.select_related("user")]
    if ordered:
        named.sort(key=lambda row: row[2])
    return named
