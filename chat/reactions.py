"""Reactions as the message object shows them: one entry per emoji, in the order each emoji was
first added, with its users in the order they reacted.

A message's reactions are read for a page of messages at once (`load`, one query) and kept on
each instance (`attach`), where the serializer finds them; a message just stored has none.
"""

from __future__ import annotations

from typing import Any, Iterable

from .models import ChatMessage, ChatReaction
from .users import display_name

# The instance attribute the reactions of a message are kept in.
_ATTRIBUTE = "_chat_reactions"


def attach(message: ChatMessage, reactions: Iterable[ChatReaction]) -> None:
    """Keep `reactions` (the message's, in id order, their users attached) on the message."""
    grouped: dict[str, list[str]] = {}
    for reaction in reactions:
        grouped.setdefault(reaction.emoji, []).append(display_name(reaction.user))
    setattr(message, _ATTRIBUTE, [{"emoji": emoji, "users": names} for emoji, names in grouped.items()])


def load(messages: Iterable[ChatMessage]) -> None:
    """Read the reactions of these messages in one query (none for an empty list) and attach them."""
    by_id = {message.pk: message for message in messages}
    if not by_id:
        return
    found: dict[int, list[ChatReaction]] = {message_id: [] for message_id in by_id}
    for reaction in ChatReaction.objects.filter(message_id__in=list(by_id)).select_related("user").order_by("id"):
        found[reaction.message_id].append(reaction)
    for message_id, reactions in found.items():
        attach(by_id[message_id], reactions)


def of(message: ChatMessage) -> list[dict[str, Any]]:
    """The message's reactions on the wire; read now (one query) if no page loaded them."""
    if not hasattr(message, _ATTRIBUTE):
        load([message])
    return getattr(message, _ATTRIBUTE)
