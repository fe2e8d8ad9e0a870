"""Django signals sent after each change the chat stores, from the domain functions themselves, so
they come alike for a WebSocket worker's request and a REST API call (docs/extending.md).

Each is sent once the change is committed (`transaction.on_commit`; at once in autocommit), with
objects already in hand: sending costs no query. A receiver that raises is logged with its
traceback and does not fail the request: the change is stored, and the other receivers still run.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# sender ChatMessage; message (its author attached), room_id (UUID), member_ids. Once per stored
# message: a retry that finds its message stored already sends nothing.
message_posted = Signal()
# sender ChatMessage; message (as stored now, its author and reactions attached), action
# ("edit_message", "delete_message", "add_reaction" or "remove_reaction"), user (who did it),
# member_ids. Once per stored change: a request that changed nothing (a retry) sends nothing.
message_changed = Signal()
# sender ChatRoom; room, user (who made it: a direct room's first sender), member_ids.
room_created = Signal()
# sender ChatRoom; room, user (who added them), added (the users named: some may have been
# members already), member_ids (every member now).
members_added = Signal()
# sender ChatRoom; room_id (UUID), user (who left), member_ids (those who remain).
member_left = Signal()
# sender ChatRoom; user, room, last_read_id, unread_count. Only when the read mark moved.
room_read = Signal()


def send_on_commit(signal: Signal, sender: type, **arguments: Any) -> None:
    """Send `signal` once the current transaction commits (at once outside one)."""
    # `receivers` first: an empty list costs nothing to read, the check by sender does some work.
    if not signal.receivers or not signal.has_listeners(sender):
        return
    transaction.on_commit(lambda: _send(signal, sender, arguments))


def _send(signal: Signal, sender: type, arguments: dict[str, Any]) -> None:
    for receiver, outcome in signal.send_robust(sender, **arguments):
        if isinstance(outcome, Exception):
            name = getattr(receiver, "__qualname__", repr(receiver))
            logger.error("a receiver of %s (%s) failed", _name(signal), name,
                         exc_info=(type(outcome), outcome, outcome.__traceback__))


def _name(signal: Signal) -> str:
    return next((name for name, value in globals().items() if value is signal), repr(signal))
