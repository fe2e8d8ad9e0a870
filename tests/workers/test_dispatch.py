"""`workers.dispatch`: from one raw bus request to the reply envelope and its topic, for every action."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from types import SimpleNamespace

import pytest
from django.core import signing
from rest_framework.authtoken.models import Token

from chat import tickets

from chat.models import ChatMessage
from workers import dispatch
from workers.dispatch import Outgoing
from workers.actions import registry

REPLY_TO = "gateway-1-replies"
RESPONSE_TOPIC = "worker_response_test"
MESSAGE_KEYS = {"id", "user", "room", "timestamp", "text", "edited_at", "deleted", "reactions"}


def bus_request(action: str, user=None, **fields: Any) -> dict[str, Any]:
    """A request as the gateway publishes it: the client's frame plus the gateway's own keys."""
    return {"uuid": uuid.uuid4().hex, "action": action, **fields,
            "session_data": {"user_pk": user.pk} if user is not None else None,
            "request_id": "gateway-1:42", "reply_to": REPLY_TO}


def send(request: dict[str, Any]) -> Outgoing:
    outgoing = dispatch.process(json.dumps(request).encode(), RESPONSE_TOPIC)
    assert outgoing is not None
    # What the worker publishes must survive the trip through Redis.
    assert json.loads(outgoing.encode()) == outgoing.envelope
    return outgoing


def assert_error(outgoing: Outgoing, request: dict[str, Any], code: str) -> dict[str, Any]:
    """An error goes to the requester alone, changes no session, and keeps uuid, action and room."""
    assert outgoing.topic == REPLY_TO
    envelope = outgoing.envelope
    assert envelope["type"] == "error_response"
    assert envelope["request_id"] == request["request_id"]
    assert envelope["send_to"] is None
    assert envelope["session_data"] is None
    response = envelope["response"]
    assert response["status"] == "error"
    assert response["error_code"] == code
    assert isinstance(response["error_message"], str) and response["error_message"]
    # uuid and action come back as the request had them when they are strings, null otherwise
    # (websockets_gateway.wire.reply_head, as the gateway's own replies).
    for key in ("uuid", "action"):
        assert response[key] == (request.get(key) if isinstance(request.get(key), str) else None)
    if isinstance(request.get("room"), str):
        assert response["room"] == request["room"]
    else:
        assert "room" not in response
    return response


@pytest.mark.action("authenticate")
class TestAuthenticate:
    def test_good_token(self, alice):
        request = bus_request("authenticate", token=Token.objects.get(user=alice).key)
        outgoing = send(request)
        assert outgoing.topic == REPLY_TO
        assert outgoing.envelope == {
            "type": "success_response",
            "request_id": "gateway-1:42",
            "send_to": None,
            "session_data": {"user_pk": alice.pk},
            "response": {"uuid": request["uuid"], "action": "authenticate", "status": "success",
                         "user": {"username": "alice"}, "actions": registry.catalogue()["actions"]},
        }
        # The catalogue: what the client may send again with the same uuid.
        actions = outgoing.envelope["response"]["actions"]
        assert actions["new_message"] == {"retry": True} and actions["create_room"] == {"retry": False}
        assert set(actions) == {declared.name for declared in registry}

    def test_authenticating_again_replaces_the_session(self, alice, bob):
        request = bus_request("authenticate", user=alice, token=Token.objects.get(user=bob).key)
        assert send(request).envelope["session_data"] == {"user_pk": bob.pk}

    @pytest.mark.parametrize("token", ["no-such-token", "", None, 42, ["x"]])
    def test_bad_token(self, alice, token):
        request = bus_request("authenticate", token=token)
        response = assert_error(send(request), request, "invalid_token")
        assert "user" not in response

    def test_missing_token(self, alice):
        request = bus_request("authenticate")
        assert_error(send(request), request, "invalid_token")

    def test_inactive_users_token(self, make_user):
        gone = make_user("gone", is_active=False)
        request = bus_request("authenticate", token=Token.objects.get(user=gone).key)
        assert_error(send(request), request, "invalid_token")


@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")  # WhiteNoise, before collectstatic
@pytest.mark.action("authenticate")
class TestAuthenticateWithATicket:
    """The chat page's credential (chat.tickets): short-lived, bound to the user and its session."""

    @pytest.fixture
    def session(self, client, alice):
        """A browser logged in as alice."""
        client.force_login(alice)
        return client

    @pytest.fixture
    def clock(self, monkeypatch) -> SimpleNamespace:
        frozen = SimpleNamespace(now=1_800_000_000.0)
        monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: frozen.now))
        return frozen

    @staticmethod
    def ticket(session, user) -> str:
        return tickets.issue(user, session.session.session_key)

    def test_good_ticket(self, alice, session):
        request = bus_request("authenticate", ticket=self.ticket(session, alice))
        outgoing = send(request)
        assert outgoing.topic == REPLY_TO
        assert outgoing.envelope["session_data"] == {"user_pk": alice.pk}
        assert outgoing.envelope["response"] == {"uuid": request["uuid"], "action": "authenticate",
                                                 "status": "success", "user": {"username": "alice"},
                                                 "actions": registry.catalogue()["actions"]}

    def test_a_ticket_authenticates_again_within_its_lifetime(self, alice, session):
        ticket = self.ticket(session, alice)
        for _ in range(2):
            assert send(bus_request("authenticate", ticket=ticket)).envelope["session_data"] == {"user_pk": alice.pk}

    @pytest.mark.parametrize("ticket", ["no-such-ticket", "", None, 42, ["x"]])
    def test_bad_ticket(self, alice, ticket):
        request = bus_request("authenticate", ticket=ticket)
        assert "user" not in assert_error(send(request), request, "invalid_token")

    def test_a_ticket_wins_over_a_token_in_the_same_frame(self, alice, bob):
        request = bus_request("authenticate", ticket="forged", token=Token.objects.get(user=bob).key)
        assert_error(send(request), request, "invalid_token")

    def test_expired_ticket(self, alice, session, clock, settings):
        settings.CHAT = {**settings.CHAT, "TICKET_MAX_AGE": 60}
        ticket = self.ticket(session, alice)
        clock.now += 61
        request = bus_request("authenticate", ticket=ticket)
        assert_error(send(request), request, "invalid_token")

    def test_a_logged_out_sessions_ticket(self, alice, session):
        ticket = self.ticket(session, alice)
        session.post("/logout/")
        request = bus_request("authenticate", ticket=ticket)
        assert_error(send(request), request, "invalid_token")


@pytest.mark.action("select_room")
class TestSelectRoom:
    def test_member_gets_the_last_messages(self, alice, bob, room):
        for n in range(25):
            ChatMessage.objects.create(user=bob if n % 2 else alice, room=room, text=f"m{n}")
        request = bus_request("select_room", user=alice, room=room.pk.hex)
        outgoing = send(request)
        assert outgoing.topic == REPLY_TO
        envelope = outgoing.envelope
        assert (envelope["type"], envelope["send_to"], envelope["session_data"]) == ("success_response", None, None)
        response = envelope["response"]
        assert set(response) == {"uuid", "action", "room", "status", "room_messages"}
        assert (response["uuid"], response["action"], response["room"], response["status"]) == (
            request["uuid"], "select_room", room.pk.hex, "success")
        messages = response["room_messages"]
        assert [m["text"] for m in messages] == [f"m{n}" for n in range(5, 25)]
        assert all(set(m) == MESSAGE_KEYS and m["room"] == room.pk.hex for m in messages)
        assert messages[0]["user"] == {"username": "bob"}

    def test_hyphenated_room_id_is_accepted_and_echoed(self, alice, room):
        request = bus_request("select_room", user=alice, room=str(room.pk))
        response = send(request).envelope["response"]
        assert response["status"] == "success"
        assert response["room"] == str(room.pk)
        assert response["room_messages"] == []

    def test_non_member(self, carol, room):
        request = bus_request("select_room", user=carol, room=room.pk.hex)
        response = assert_error(send(request), request, "invalid_room_id")
        assert "room_messages" not in response

    def test_non_member_and_nonexistent_room_get_the_same_reply(self, carol, room):
        not_member = send(bus_request("select_room", user=carol, room=room.pk.hex)).envelope["response"]
        nonexistent = send(bus_request("select_room", user=carol, room=uuid.uuid4().hex)).envelope["response"]
        assert (not_member["error_code"], not_member["error_message"]) == (
            nonexistent["error_code"], nonexistent["error_message"])

    @pytest.mark.parametrize("room_id", ["nope", "", "g" * 32, uuid.uuid4().hex])
    def test_bad_room_id(self, alice, room, room_id):
        request = bus_request("select_room", user=alice, room=room_id)
        assert_error(send(request), request, "invalid_room_id")

    @pytest.mark.parametrize("room_id", [123, None, ["a"], {"id": "a"}])
    def test_non_string_room(self, alice, room, room_id):
        request = bus_request("select_room", user=alice, room=room_id)
        assert_error(send(request), request, "invalid_message_format")

    def test_missing_room(self, alice, room):
        request = bus_request("select_room", user=alice)
        assert_error(send(request), request, "invalid_message_format")


@pytest.mark.action("new_message")
class TestNewMessage:
    def test_goes_to_every_member_on_the_response_topic(self, alice, bob, carol, make_room):
        room = make_room(alice, bob, carol)
        request = bus_request("new_message", user=alice, room=room.pk.hex, text="hello")
        outgoing = send(request)
        assert outgoing.topic == RESPONSE_TOPIC
        envelope = outgoing.envelope
        assert envelope["type"] == "success_response"
        assert envelope["request_id"] == "gateway-1:42"
        assert envelope["send_to"] == sorted([alice.pk, bob.pk, carol.pk])
        assert envelope["session_data"] is None
        response = envelope["response"]
        assert set(response) == {"uuid", "action", "room", "status", "message", "cursor"}
        assert isinstance(response["cursor"], str)
        assert (response["uuid"], response["action"], response["room"], response["status"]) == (
            request["uuid"], "new_message", room.pk.hex, "success")
        message = response["message"]
        stored = ChatMessage.objects.get()
        assert set(message) == MESSAGE_KEYS
        assert message["id"] == stored.pk
        assert message["user"] == {"username": "alice"}
        assert message["text"] == "hello"
        assert re.fullmatch(r"[0-9a-f]{32}", message["room"]) and message["room"] == room.pk.hex
        assert isinstance(message["timestamp"], float)
        assert (stored.user, stored.room, stored.client_uuid) == (alice, room, request["uuid"])

    def test_retried_uuid_is_stored_once_with_the_same_message(self, alice, room):
        request = bus_request("new_message", user=alice, room=room.pk.hex, text="hello")
        first = send(request).envelope
        retry = send(request).envelope
        assert ChatMessage.objects.count() == 1
        assert retry["response"]["message"]["id"] == first["response"]["message"]["id"]
        assert retry["response"]["message"] == first["response"]["message"]
        assert retry["send_to"] == first["send_to"]

    def test_same_uuid_from_another_user_is_another_message(self, alice, bob, room):
        client_uuid = uuid.uuid4().hex
        send({**bus_request("new_message", user=alice, room=room.pk.hex, text="a"), "uuid": client_uuid})
        send({**bus_request("new_message", user=bob, room=room.pk.hex, text="b"), "uuid": client_uuid})
        assert sorted(ChatMessage.objects.values_list("text", flat=True)) == ["a", "b"]

    def test_retries_of_two_users_with_one_uuid_each_get_their_own_message(self, alice, bob, room):
        client_uuid = uuid.uuid4().hex
        requests = {user: {**bus_request("new_message", user=user, room=room.pk.hex, text=user.username),
                           "uuid": client_uuid} for user in (alice, bob)}
        first = {user: send(request).envelope["response"]["message"] for user, request in requests.items()}
        for user in (bob, alice):
            retry = send({**requests[user], "text": "again"}).envelope["response"]["message"]
            assert retry == first[user]
            assert (retry["user"], retry["text"]) == ({"username": user.username}, user.username)
        assert ChatMessage.objects.count() == 2

    def test_a_retry_naming_a_room_with_other_members_reaches_only_the_stored_rooms(self, alice, bob, carol,
                                                                                  room, make_room):
        other = make_room(alice, carol, name="other")
        request = bus_request("new_message", user=alice, room=room.pk.hex, text="hi")
        first = send(request).envelope
        retry = send({**request, "room": other.pk.hex}).envelope
        assert retry["response"]["message"] == first["response"]["message"]
        assert retry["response"]["message"]["room"] == room.pk.hex
        assert sorted(retry["send_to"]) == sorted([alice.pk, bob.pk])
        assert ChatMessage.objects.count() == 1

    @pytest.mark.parametrize("character", ["x", "\U0001f600"])
    def test_text_at_the_default_length_limit_is_stored_and_one_more_is_refused(self, alice, room, character):
        # MAX_MESSAGE_LENGTH's default, 4000 characters (code points, not bytes).
        at_limit = bus_request("new_message", user=alice, room=room.pk.hex, text=character * 4000)
        assert send(at_limit).envelope["response"]["message"]["text"] == character * 4000
        over = bus_request("new_message", user=alice, room=room.pk.hex, text=character * 4001)
        assert_error(send(over), over, "text_too_long")
        assert list(ChatMessage.objects.values_list("text", flat=True)) == [character * 4000]

    @pytest.mark.parametrize("text", ["", "   ", "\n\t"])
    def test_empty_text(self, alice, room, text):
        request = bus_request("new_message", user=alice, room=room.pk.hex, text=text)
        assert_error(send(request), request, "empty_text")
        assert not ChatMessage.objects.exists()

    def test_text_too_long(self, alice, room, settings):
        settings.CHAT = {**settings.CHAT, "MAX_MESSAGE_LENGTH": 5}
        request = bus_request("new_message", user=alice, room=room.pk.hex, text="toolong")
        assert_error(send(request), request, "text_too_long")
        assert not ChatMessage.objects.exists()

    @pytest.mark.parametrize("text", [None, 7, ["hi"]])
    def test_non_string_text(self, alice, room, text):
        request = bus_request("new_message", user=alice, room=room.pk.hex, text=text)
        assert_error(send(request), request, "invalid_message_format")
        assert not ChatMessage.objects.exists()

    @pytest.mark.parametrize("room_id", ["bad", uuid.uuid4().hex])
    def test_invalid_room_id(self, alice, room, room_id):
        request = bus_request("new_message", user=alice, room=room_id, text="hello")
        assert_error(send(request), request, "invalid_room_id")
        assert not ChatMessage.objects.exists()

    def test_non_member(self, carol, room):
        request = bus_request("new_message", user=carol, room=room.pk.hex, text="hello")
        assert_error(send(request), request, "invalid_room_id")
        assert not ChatMessage.objects.exists()

    def test_non_string_room(self, alice, room):
        request = bus_request("new_message", user=alice, room=5, text="hello")
        assert_error(send(request), request, "invalid_message_format")


class TestAuthenticationRequired:
    @pytest.mark.parametrize("action", ["select_room", "new_message"])
    @pytest.mark.parametrize("session_data", [None, {}, {"user_pk": None}, "alice", ["user_pk"]])
    def test_without_a_user(self, room, action, session_data):
        request = {**bus_request(action, room=room.pk.hex, text="hi"), "session_data": session_data}
        assert_error(send(request), request, "authentication_required")
        assert not ChatMessage.objects.exists()

    @pytest.mark.parametrize("action", ["select_room", "new_message"])
    def test_deleted_user(self, alice, room, action):
        request = bus_request(action, user=alice, room=room.pk.hex, text="hi")
        alice.delete()
        assert_error(send(request), request, "authentication_required")

    @pytest.mark.parametrize("action", ["select_room", "new_message"])
    def test_inactive_user(self, alice, room, action):
        alice.is_active = False
        alice.save()
        request = bus_request(action, user=alice, room=room.pk.hex, text="hi")
        assert_error(send(request), request, "authentication_required")
        assert not ChatMessage.objects.exists()

    def test_user_pk_must_be_an_integer(self, alice, room):
        request = {**bus_request("select_room", room=room.pk.hex), "session_data": {"user_pk": str(alice.pk)}}
        assert_error(send(request), request, "authentication_required")


class TestMalformedRequests:
    @pytest.mark.parametrize("action", ["shout", "ping", "__init__", "ROUTES", "get", "authenticate "])
    def test_unknown_action(self, alice, action):
        request = bus_request(action, user=alice)
        assert_error(send(request), request, "invalid_action")

    @pytest.mark.parametrize("bad_uuid", [None, "", "x" * 65, 5, ["u"]])
    def test_missing_or_bad_uuid(self, alice, bad_uuid):
        request = {**bus_request("authenticate", token=Token.objects.get(user=alice).key), "uuid": bad_uuid}
        response = assert_error(send(request), request, "invalid_message_format")
        assert "user" not in response

    def test_uuid_of_64_characters_is_accepted(self, alice):
        request = {**bus_request("authenticate", token=Token.objects.get(user=alice).key), "uuid": "x" * 64}
        assert send(request).envelope["response"]["status"] == "success"

    def test_uuid_key_absent(self, alice):
        request = bus_request("authenticate", token=Token.objects.get(user=alice).key)
        del request["uuid"]
        response = assert_error(send(request), request, "invalid_message_format")
        assert response["uuid"] is None

    @pytest.mark.parametrize("action", [None, "", 3])
    def test_missing_or_bad_action(self, alice, action):
        request = bus_request("x", user=alice)
        request["action"] = action
        assert_error(send(request), request, "invalid_message_format")

    def test_client_supplied_extra_keys_change_nothing(self, alice, bob, room):
        request = bus_request("new_message", user=alice, room=room.pk.hex, text="hello",
                              send_to=[999], type="error_response", status="error", message="forged",
                              user_pk=bob.pk, nested={"a": [1, 2, {"b": None}]})
        outgoing = send(request)
        assert outgoing.topic == RESPONSE_TOPIC
        envelope = outgoing.envelope
        assert envelope["type"] == "success_response"
        assert envelope["send_to"] == sorted([alice.pk, bob.pk])
        response = envelope["response"]
        assert response["status"] == "success"
        assert response["message"]["user"] == {"username": "alice"}
        assert response["message"]["text"] == "hello"
        assert "nested" not in response and "user_pk" not in response
        assert ChatMessage.objects.get().user == alice


class TestUnexpectedErrors:
    def test_handler_exception_becomes_server_error_and_is_logged(self, alice, room, replace_handler, caplog):
        def broken(request):
            raise RuntimeError("secret detail")

        replace_handler("select_room", broken)
        request = bus_request("select_room", user=alice, room=room.pk.hex)
        with caplog.at_level(logging.ERROR, logger="workers.dispatch"):
            outgoing = send(request)
        response = assert_error(outgoing, request, "server_error")
        assert response["error_message"] == "Server error"
        assert b"secret detail" not in outgoing.encode()
        [record] = [r for r in caplog.records if r.name == "workers.dispatch" and r.levelno == logging.ERROR]
        # The request's id is a context field of the line (conn=… request=… in text, a key in JSON).
        assert record.request_id == "gateway-1:42" and record.action == "select_room"
        assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)

    def test_the_worker_goes_on_after_an_unexpected_error(self, alice, room, replace_handler):
        real_handler = registry.get("select_room").handler
        failures = [RuntimeError("once")]

        def fails_once(request):
            if failures:
                raise failures.pop()
            return real_handler(request)

        replace_handler("select_room", fails_once)
        assert send(bus_request("select_room", user=alice, room=room.pk.hex)).envelope["type"] == "error_response"
        assert send(bus_request("select_room", user=alice, room=room.pk.hex)).envelope["type"] == "success_response"


class TestDecode:
    @pytest.mark.parametrize("raw", [
        b"not json",
        b"\xff\xfe",
        b"",
        b"[1, 2]",
        b'"a string"',
        b"null",
        json.dumps({"uuid": "u", "action": "authenticate", "request_id": "g:1"}).encode(),
        json.dumps({"uuid": "u", "action": "authenticate", "request_id": "g:1", "reply_to": 5}).encode(),
        json.dumps({"uuid": "u", "action": "authenticate", "reply_to": "gw"}).encode(),
        json.dumps({"uuid": "u", "action": "authenticate", "reply_to": "gw", "request_id": ""}).encode(),
    ])
    def test_unanswerable_requests_are_dropped_and_logged(self, raw, caplog):
        with caplog.at_level(logging.ERROR, logger="workers.dispatch"):
            assert dispatch.process(raw, RESPONSE_TOPIC) is None
        assert any(r.name == "workers.dispatch" and r.levelno == logging.ERROR for r in caplog.records)

    def test_str_and_bytes_are_both_decoded(self):
        request = {"uuid": "u", "action": "x", "request_id": "g:1", "reply_to": "gw"}
        assert dispatch.decode(json.dumps(request)) == request
        assert dispatch.decode(json.dumps(request).encode()) == request


def test_process_checks_the_database_connection_before_and_after(alice, connection_checks):
    send(bus_request("authenticate", token=Token.objects.get(user=alice).key))
    assert connection_checks == ["close_old_connections", "close_old_connections"]


def test_connection_is_checked_even_when_answering_fails(alice, connection_checks, monkeypatch):
    def broken(data, response_topic, online=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(dispatch, "handle", broken)
    with pytest.raises(RuntimeError):
        dispatch.process(json.dumps(bus_request("authenticate")), RESPONSE_TOPIC)
    assert connection_checks == ["close_old_connections", "close_old_connections"]


def test_encode_keeps_non_ascii_text_readable(alice, room):
    outgoing = send(bus_request("new_message", user=alice, room=room.pk.hex, text="héllo ✓"))
    encoded = outgoing.encode()
    assert "héllo ✓".encode() in encoded  # as UTF-8, not as escapes
    assert json.loads(encoded)["response"]["message"]["text"] == "héllo ✓"
