"""Short-lived WebSocket tickets: what the chat page authenticates its WebSocket with, instead of
the user's permanent REST framework token.

A ticket is signed (django.core.signing, keyed with SECRET_KEY, which the web process that issues
it and the workers that check it share) and names the user, the login session it was issued to
and the account's password state. It is refused once it is older than `TICKET_MAX_AGE` seconds,
once its session has logged out, once the password has changed (as Django refuses the sessions of
an old password), or when the account is inactive. Within its lifetime it may authenticate more
than once (a page that reconnects within the minute): single use would need a record of used
tickets shared by every worker, which a credential this short-lived is not worth.

The session is named by a keyed hash of its key, never the key: the session cookie is kept from
the page's scripts (HttpOnly), and the ticket must not hand it to them. A worker cannot find a
session by that hash, so a logout records it (EndedSession) for as long as a ticket of that
session could still be valid.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple, Sequence

from django.contrib.auth import get_user_model
from django.core import signing
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from . import errors
from .conf import chat_settings
from .models import EndedSession

User = get_user_model()

TICKET_SALT = "chat.tickets.websocket"
SESSION_SALT = "chat.tickets.session"
PASSWORD_SALT = "chat.tickets.password"
# What issue() makes is about 210 characters; anything much longer is no ticket, and is refused
# before any work is spent on it.
MAX_TICKET_LENGTH = 512
# A logout is remembered this much longer than a ticket lives: the clocks of the host that issued
# a ticket and of the worker that checks it may disagree by this much.
CLOCK_SKEW = timedelta(seconds=60)


class Claims(NamedTuple):
    """What a ticket whose signature and age are good says."""

    user_pk: int
    session_hash: str
    password_hash: str


def session_hash(session_key: str) -> str:
    return salted_hmac(SESSION_SALT, session_key, algorithm="sha256").hexdigest()


def password_hash(user: Any) -> str:
    # Changes when the password does (Django's session auth hash is derived from it).
    return salted_hmac(PASSWORD_SALT, user.get_session_auth_hash(), algorithm="sha256").hexdigest()[:32]


def issue(user: Any, session_key: str) -> str:
    """A ticket for `user`, logged in with the session whose key is `session_key`."""
    return signing.dumps({"u": user.pk, "s": session_hash(session_key), "p": password_hash(user)}, salt=TICKET_SALT)


def claims(ticket: Any) -> Claims | None:
    """The ticket's claims if it is one this site signed, less than TICKET_MAX_AGE seconds ago;
    else None. Nothing here says whether its session or account is still good (users_for_tickets)."""
    if not isinstance(ticket, str) or not ticket or len(ticket) > MAX_TICKET_LENGTH:
        return None
    try:
        data = signing.loads(ticket, salt=TICKET_SALT, max_age=chat_settings.TICKET_MAX_AGE)
    except signing.BadSignature:  # SignatureExpired included
        return None
    if not isinstance(data, dict):
        return None
    user_pk, session, password = data.get("u"), data.get("s"), data.get("p")
    if not (isinstance(user_pk, int) and not isinstance(user_pk, bool)
            and isinstance(session, str) and isinstance(password, str)):
        return None
    return Claims(user_pk, session, password)


def users_for_tickets(tickets: Sequence[Any]) -> list[Any]:
    """The active user each ticket authenticates, or InvalidToken, in order; two queries for all of
    them (their accounts, and which of their sessions have logged out)."""
    claimed = [claims(ticket) for ticket in tickets]
    good = [claim for claim in claimed if claim is not None]
    accounts = User.objects.filter(is_active=True).in_bulk({claim.user_pk for claim in good}) if good else {}
    ended = set(EndedSession.objects.filter(session_hash__in={claim.session_hash for claim in good})
                .values_list("session_hash", flat=True)) if good else set()
    users: list[Any] = []
    for claim in claimed:
        user = accounts.get(claim.user_pk) if claim is not None else None
        if (user is None or claim.session_hash in ended
                or not constant_time_compare(claim.password_hash, password_hash(user))):
            users.append(errors.InvalidToken("Invalid or expired ticket"))
        else:
            users.append(user)
    return users


def session_ended(session_key: str | None) -> None:
    """Refuse the tickets of this session from now on (a logout). The logouts older than any ticket
    that could still be valid are forgotten here too, so the table stays small."""
    if not session_key:
        return
    now = timezone.now()
    EndedSession.objects.filter(ended_at__lt=now - timedelta(seconds=chat_settings.TICKET_MAX_AGE) - CLOCK_SKEW).delete()
    EndedSession.objects.update_or_create(session_hash=session_hash(session_key), defaults={"ended_at": now})


def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """The user_logged_out receiver: Django sends it before it ends the session, key still known."""
    session = getattr(request, "session", None) if request is not None else None
    session_ended(session.session_key if session is not None else None)
