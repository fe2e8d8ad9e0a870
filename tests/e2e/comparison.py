"""Checks the benchmark's comparisons share (tests/e2e/test_channels_comparison.py and
test_socketio_comparison.py): the other server answers as the gateway and its workers do."""

from __future__ import annotations

from typing import Any

from chat.models import ChatMessage
from tests.e2e.client import frame_shape


def check_message_as_the_gateways(e2e: Any, reply: dict[str, Any], gateway_reply: dict[str, Any], text: str,
                                  room: dict[str, Any], sender: dict[str, Any]) -> None:
    """A `new_message` reply from the other server: the gateway's frame, for the message stored once."""
    assert reply["message"]["text"] == text and reply["message"]["room"] == room["id"]
    assert reply["message"]["user"] == {"username": sender["username"]}
    assert frame_shape(reply) == frame_shape(gateway_reply)
    stored = e2e.orm(lambda: list(ChatMessage.objects.filter(text=text).values_list("id", flat=True)))
    assert stored == [reply["message"]["id"]]


def check_refusals_as_the_workers(e2e: Any, unauthenticated: dict[str, Any], bad_token: dict[str, Any],
                                  not_member: dict[str, Any], gateway_not_member: dict[str, Any]) -> None:
    """The other server's refusals (all sent with the text "refused"): the workers', nothing stored."""
    assert unauthenticated["error_code"] == "authentication_required"
    assert bad_token["error_code"] == "invalid_token"
    assert not_member["status"] == "error" and not_member["error_code"] == gateway_not_member["error_code"]
    assert not e2e.orm(lambda: ChatMessage.objects.filter(text="refused").exists())
