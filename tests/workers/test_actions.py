"""The action registry (`workers.actions`): what may be declared, the catalogue it gives clients
and the gateway, and how dispatch applies an action's declared rules."""

from __future__ import annotations

import gc
import json

import pytest
from rest_framework import serializers

from chat import errors
from chat.errors import ChatError
from workers import dispatch
from workers.actions import Action, ActionRegistry, Request, action, registry
from workers.envelopes import HandlerResult

from .test_dispatch import RESPONSE_TOPIC, bus_request


def answer(request: Request) -> HandlerResult:
    return HandlerResult(request.success(params=dict(request.params), user_pk=request.user_pk))


@pytest.fixture
def declared():
    """declared(name, **rules): an action of this test's, in the registry until the test ends."""
    names: list[str] = []

    def declare(name: str, **rules) -> None:
        action(name, **rules)(answer)
        names.append(name)

    yield declare
    for name in names:
        registry.unregister(name)


class Fields(serializers.Serializer):
    size = serializers.IntegerField(min_value=1, max_value=9)
    label = serializers.CharField(default="none")


@pytest.mark.parametrize("name", ["", "Ping", "ping", "new-message", "a" * 65, "1st", "with space"])
def test_a_name_outside_the_rules_is_refused(name):
    with pytest.raises(ValueError):
        ActionRegistry().register(Action(name, answer))


def test_an_action_declared_twice_is_refused_and_the_same_declaration_again_is_not():
    actions = ActionRegistry()
    actions.register(Action("shout", answer))
    actions.register(Action("shout", answer, retry=True))  # a module imported again: same handler
    with pytest.raises(ValueError, match="declared twice"):
        actions.register(Action("shout", lambda request: None))


def test_the_catalogue_follows_what_is_declared():
    actions = ActionRegistry()
    action("shout", retry=True, into=actions)(answer)
    action("whisper", into=actions)(answer)
    assert actions.catalogue()["actions"] == {"shout": {"retry": True}, "whisper": {"retry": False}}
    actions.unregister("whisper")
    assert json.loads(actions.catalogue_json())["actions"] == {"shout": {"retry": True}}
    assert "invalid_action" in actions.catalogue()["error_codes"]


def test_a_host_apps_error_code_joins_the_catalogue():
    class OrderClosed(ChatError):
        code = "order_closed"

    # Declared after the registry's first catalogue: a new declaration makes it anew.
    actions = ActionRegistry()
    action("close_order", into=actions)(answer)
    assert "order_closed" in actions.error_codes() and "order_closed" in actions.catalogue()["error_codes"]
    # Gone with the class, so that no other test's catalogue holds it.
    del OrderClosed
    gc.collect()
    assert "order_closed" not in errors.codes()


def test_declared_fields_are_validated_and_given_as_params(alice, declared):
    declared("resize", fields=Fields)
    reply = dispatch.handle(bus_request("resize", user=alice, size=3), RESPONSE_TOPIC).envelope["response"]
    assert reply["status"] == "success" and reply["params"] == {"size": 3, "label": "none"}
    for fields, message in (({}, "size: This field is required."),
                            ({"size": 10}, "size: Ensure this value is less than or equal to 9."),
                            ({"size": "x"}, "size: A valid integer is required.")):
        refused = dispatch.handle(bus_request("resize", user=alice, **fields), RESPONSE_TOPIC).envelope["response"]
        assert (refused["error_code"], refused["error_message"]) == ("invalid_message_format", message)


def test_an_action_needs_an_active_user_unless_declared_otherwise(alice, declared):
    declared("whoami")
    declared("hello", requires_user=False)
    anonymous = {"uuid": "u", "session_data": {}, "request_id": "gw:1", "reply_to": "gw"}
    refused = dispatch.handle({**anonymous, "action": "whoami"}, RESPONSE_TOPIC).envelope["response"]
    assert refused["error_code"] == "authentication_required"
    assert dispatch.handle({**anonymous, "action": "hello"}, RESPONSE_TOPIC).envelope["response"]["status"] \
        == "success"
    alice.is_active = False
    alice.save()
    refused = dispatch.handle(bus_request("whoami", user=alice), RESPONSE_TOPIC).envelope["response"]
    assert refused["error_code"] == "authentication_required"


def test_an_action_no_one_declared_is_invalid_action(alice):
    reply = dispatch.handle(bus_request("approve_order", user=alice), RESPONSE_TOPIC).envelope["response"]
    assert (reply["action"], reply["error_code"]) == ("approve_order", "invalid_action")
