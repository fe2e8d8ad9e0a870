"""An action of a host project's own app (tests/example_app/chat_actions.py), used end to end over
the real gateway and a real worker: declared in one module, with no change to the gateway, the
page's client or the chat package."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.action("echo")]


def test_a_host_apps_action_is_answered_through_the_gateway(e2e):
    data = e2e.fixtures(users=1)
    user = data["users"][0]

    async def scenario(session):
        client = await connect(session, e2e.gateway_b)
        # Like every action but authenticate and ping, it needs an authenticated connection.
        refused = await client.request("echo", text="hi")
        assert refused["error_code"] == "authentication_required"
        signed_in = await client.authenticate(user)
        # The catalogue tells clients they may resend it with the same uuid.
        assert signed_in["actions"]["echo"] == {"retry": True}
        assert signed_in["actions"]["create_room"] == {"retry": False}

        reply = await client.ok("echo", text="hi", times=2, room="anything")
        assert reply["text"] == "hi hi" and reply["user"] == {"username": user["username"]}
        # The reply's head is the protocol's: uuid, action and the room the frame named.
        assert reply["action"] == "echo" and reply["room"] == "anything"

        # Its serializer's complaints are invalid_message_format, naming the field.
        for fields, field in (({}, "text"), ({"text": "x" * 201}, "text"), ({"text": "hi", "times": 9}, "times")):
            refused = await client.request("echo", **fields)
            assert refused["error_code"] == "invalid_message_format", refused
            assert refused["error_message"].startswith(f"{field}: "), refused

        # An action no app declares is refused by the worker, not the gateway.
        unknown = await client.request("echo_twice", text="hi")
        assert (unknown["action"], unknown["error_code"]) == ("echo_twice", "invalid_action")
        # A uuid reused after the reply is answered again (retry: true).
        again = await client.ok("echo", text="same", uuid="echo-1")
        assert (await client.ok("echo", text="same", uuid="echo-1"))["text"] == again["text"] == "same"

    run(scenario)

    # The gateway labels its metrics by the catalogue the workers publish: the new action by name.
    with urllib.request.urlopen(e2e.gateway_b.replace("/ws", "/metrics"), timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
    counted = {(sample.labels["action"], sample.labels["status"]): sample.value for family in families
               for sample in family.samples if sample.name == "chat_gateway_requests_total"}
    assert counted[("echo", "success")] >= 3
    assert counted[("echo", "invalid_message_format")] >= 3
    assert counted[("unknown", "invalid_action")] >= 1
