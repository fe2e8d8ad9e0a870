"""`workers.dispatch.process_batch`: requests that waited together are answered in order, one
reply each, each its own unit of work."""

from __future__ import annotations

import json
import logging

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from chat import replies, statements, tickets
from chat.models import ChatMessage
from workers import dispatch
from workers.dispatch import Outgoing

from .test_dispatch import REPLY_TO, RESPONSE_TOPIC, assert_error, bus_request


def raw(request) -> bytes:
    return json.dumps(request).encode()


def test_a_batch_is_answered_in_order_one_reply_each(alice, bob, carol, room):
    requests = [bus_request("new_message", user=alice, room=room.pk.hex, text="one"),
                bus_request("new_message", user=carol, room=room.pk.hex, text="not a member"),
                bus_request("list_rooms", user=bob),
                bus_request("new_message", user=bob, room=room.pk.hex, text="two")]
    answered = dispatch.process_batch([raw(r) for r in requests] + [b"not json"], RESPONSE_TOPIC)
    assert len(answered) == 5 and answered[4] is None
    responses = [outgoing.envelope["response"] for outgoing in answered[:4]]
    assert [r["uuid"] for r in responses] == [r["uuid"] for r in requests]
    assert [r["status"] for r in responses] == ["success", "error", "success", "success"]
    assert responses[1]["error_code"] == "invalid_room_id"
    assert list(ChatMessage.objects.order_by("id").values_list("text", flat=True)) == ["one", "two"]


def test_a_batch_that_fails_half_way_is_safe_to_retry(alice, room, monkeypatch):
    # The database failing outside a handler ends the batch: the consumer logs it and the
    # requesters get `timeout`. What was stored stays stored, once: the retry with the same
    # uuids stores nothing twice and answers the stored messages. (Messages between other
    # requests, so that each is answered alone, by `handle`; for messages in a row, see below.)
    real_handle = dispatch.handle
    handled = []

    def failing_after_two(data, response_topic, online=None):
        if len(handled) == 2:
            raise RuntimeError("the database connection is gone")
        handled.append(data["uuid"])
        return real_handle(data, response_topic, online)

    requests = []
    for n in range(3):
        requests += [bus_request("new_message", user=alice, room=room.pk.hex, text=str(n)),
                     bus_request("list_rooms", user=alice)]
    monkeypatch.setattr(dispatch, "handle", failing_after_two)
    with pytest.raises(RuntimeError):
        dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    assert sorted(ChatMessage.objects.values_list("text", flat=True)) == ["0"]
    monkeypatch.setattr(dispatch, "handle", real_handle)
    answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    assert [o.envelope["response"]["message"]["text"] for o in answered[::2]] == ["0", "1", "2"]
    assert sorted(ChatMessage.objects.values_list("text", flat=True)) == ["0", "1", "2"]


def test_a_retry_inside_the_same_batch_is_stored_once(alice, room):
    request = bus_request("new_message", user=alice, room=room.pk.hex, text="once")
    answered = dispatch.process_batch([raw(request), raw(request)], RESPONSE_TOPIC)
    messages = [o.envelope["response"]["message"] for o in answered]
    assert messages[0] == messages[1]
    assert ChatMessage.objects.count() == 1


# Messages in a row are answered together: the members of all their rooms in one query and one
# insert of them all (services.post_messages_as), each answered as if it had come alone.

def statements_run(requests) -> tuple[list[Outgoing | None], list[str]]:
    with CaptureQueriesContext(connection) as queries:
        answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    # The tests run in a transaction: the insert is in a savepoint (workers run in autocommit).
    return answered, [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"].upper()]


def test_messages_in_a_row_cost_two_statements_and_are_stored_in_order(alice, bob, carol, make_room, room):
    other = make_room(alice, carol, name="other")
    requests = [bus_request("new_message", user=[alice, bob, carol][n % 3], room=[room, other][n % 2].pk.hex,
                            text=f"message {n}") for n in range(12)]
    requests = [r for r in requests if not (r["session_data"]["user_pk"] == bob.pk and r["room"] == other.pk.hex)
                and not (r["session_data"]["user_pk"] == carol.pk and r["room"] == room.pk.hex)]
    answered, run = statements_run(requests)
    # The members, the insert (with the changes in the feed: one more statement on SQLite).
    assert len(run) == 1 + statements.insert_statements(), run
    assert run[1].upper().startswith(("INSERT", "WITH"))
    stored = list(ChatMessage.objects.order_by("id").values_list("id", "text", "room_id", "user_id", "client_uuid"))
    assert [text for _, text, *_ in stored] == [r["text"] for r in requests]
    for outgoing, request, (message_id, _, room_id, user_id, client_uuid) in zip(answered, requests, stored):
        assert (room_id.hex, user_id, client_uuid) == (request["room"], request["session_data"]["user_pk"],
                                                       request["uuid"])
        envelope = outgoing.envelope
        assert outgoing.topic == RESPONSE_TOPIC and envelope["request_id"] == request["request_id"]
        members = [alice.pk, bob.pk] if room_id == room.pk else [alice.pk, carol.pk]
        assert envelope["send_to"] == sorted(members)
        assert envelope["response"]["uuid"] == request["uuid"] and envelope["response"]["status"] == "success"
        message = envelope["response"]["message"]
        assert (message["id"], message["text"], message["room"]) == (message_id, request["text"], request["room"])
        assert message["user"] == {"username": {alice.pk: "alice", bob.pk: "bob", carol.pk: "carol"}[user_id]}
        # What the worker publishes must survive the trip through Redis.
        assert json.loads(outgoing.encode()) == envelope


def test_refused_messages_in_a_row_get_their_own_errors_and_the_rest_are_stored(alice, bob, carol, make_user, room):
    gone = make_user("gone", is_active=False)
    room.users.add(gone)
    requests = [bus_request("new_message", user=alice, room=room.pk.hex, text="first"),
                bus_request("new_message", user=carol, room=room.pk.hex, text="not a member"),
                bus_request("new_message", user=bob, room="not a room id", text="bad room"),
                bus_request("new_message", user=bob, room=room.pk.hex, text="   "),
                bus_request("new_message", user=gone, room=room.pk.hex, text="inactive"),
                bus_request("new_message", user=bob, room=room.pk.hex, text="x" * 100_000),
                {**bus_request("new_message", user=bob, room=room.pk.hex, text="no uuid"), "uuid": None},
                {**bus_request("new_message", room=room.pk.hex, text="no session")},
                bus_request("new_message", user=bob, room=room.pk.hex, text="last")]
    answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    codes = [o.envelope["response"].get("error_code", "ok") for o in answered]
    assert codes == ["ok", "invalid_room_id", "invalid_room_id", "empty_text", "authentication_required",
                     "text_too_long", "invalid_message_format", "authentication_required", "ok"]
    for outgoing, request, code in zip(answered, requests, codes):
        if code != "ok":
            assert_error(outgoing, request, code)
    assert list(ChatMessage.objects.order_by("id").values_list("text", flat=True)) == ["first", "last"]


def test_a_retry_among_messages_in_a_row_stores_the_others_once(alice, bob, room):
    retried = bus_request("new_message", user=alice, room=room.pk.hex, text="sent before the reconnect")
    [first] = dispatch.process_batch([raw(retried)], RESPONSE_TOPIC)
    requests = [bus_request("new_message", user=bob, room=room.pk.hex, text="one"), retried,
                bus_request("new_message", user=alice, room=room.pk.hex, text="two")]
    answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    messages = [o.envelope["response"]["message"] for o in answered]
    assert messages[1] == first.envelope["response"]["message"]
    assert answered[1].envelope["send_to"] == sorted([alice.pk, bob.pk])
    assert list(ChatMessage.objects.order_by("id").values_list("text", flat=True)) == [
        "sent before the reconnect", "one", "two"]
    assert [m["text"] for m in messages] == ["one", "sent before the reconnect", "two"]


def test_requests_before_messages_in_a_row_are_seen_by_them(alice, bob, carol, room):
    # A member added, and one who left, in the same batch: the messages after see both.
    requests = [bus_request("add_members", user=alice, room=room.pk.hex, members=["carol"]),
                bus_request("leave_room", user=bob, room=room.pk.hex),
                bus_request("new_message", user=carol, room=room.pk.hex, text="carol is in"),
                bus_request("new_message", user=bob, room=room.pk.hex, text="bob has left"),
                bus_request("new_message", user=alice, room=room.pk.hex, text="alice is in"),
                bus_request("select_room", user=alice, room=room.pk.hex)]
    answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    statuses = [o.envelope["response"].get("error_code", "ok") for o in answered]
    assert statuses == ["ok", "ok", "ok", "invalid_room_id", "ok", "ok"]
    assert answered[2].envelope["send_to"] == sorted([alice.pk, carol.pk])
    # And the request after them sees the messages.
    history = [m["text"] for m in answered[5].envelope["response"]["room_messages"]]
    assert history[-2:] == ["carol is in", "alice is in"]


def test_messages_in_a_row_whose_batch_fails_are_answered_each_alone_and_stored_once(alice, bob, room,
                                                                                      monkeypatch, caplog):
    # After the insert, building a reply fails once: dispatch answers each message again alone,
    # and each finds itself stored (by its uuid) instead of being stored again.
    real = replies.message_posted
    failures = []

    def failing_once(frame, posted):
        if not failures:
            failures.append(frame)
            raise RuntimeError("a bug in the reply")
        return real(frame, posted)

    monkeypatch.setattr(replies, "message_posted", failing_once)
    requests = [bus_request("new_message", user=[alice, bob][n % 2], room=room.pk.hex, text=str(n)) for n in range(4)]
    with caplog.at_level(logging.ERROR, logger="workers.dispatch"):
        answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    assert "answering each alone" in caplog.text
    assert [o.envelope["response"]["message"]["text"] for o in answered] == ["0", "1", "2", "3"]
    assert list(ChatMessage.objects.order_by("id").values_list("text", flat=True)) == ["0", "1", "2", "3"]


def test_a_database_error_on_one_message_of_a_row_answers_it_alone_with_server_error(alice, bob, room,
                                                                                      monkeypatch):
    # The insert of them all fails (a retry among them): they are stored one by one, and the one
    # whose own insert fails too gets server_error; the others are stored.
    real = statements.insert_message

    def failing_for_two(author, room_uuid, text, client_uuid, *kind):
        if text == "two":
            raise DatabaseError("disk I/O error")
        return real(author, room_uuid, text, client_uuid, *kind)

    retried = bus_request("new_message", user=alice, room=room.pk.hex, text="zero")
    dispatch.process_batch([raw(retried)], RESPONSE_TOPIC)
    monkeypatch.setattr(statements, "insert_message", failing_for_two)
    requests = [retried] + [bus_request("new_message", user=bob, room=room.pk.hex, text=t) for t in ("one", "two", "three")]
    answered = dispatch.process_batch([raw(r) for r in requests], RESPONSE_TOPIC)
    assert [o.envelope["response"].get("error_code", "ok") for o in answered] == ["ok", "ok", "server_error", "ok"]
    assert list(ChatMessage.objects.order_by("id").values_list("text", flat=True)) == ["zero", "one", "three"]


def test_authenticates_in_a_row_cost_one_query_and_each_gets_its_own_reply(alice, bob, make_user):
    # A gateway's clients all connecting again at once: their tokens in one query.
    gone = make_user("gone", is_active=False)
    keys = {user.username: Token.objects.get(user=user).key for user in (alice, bob, gone)}
    requests = [bus_request("authenticate", token=keys["alice"]), bus_request("authenticate", token="wrong"),
                bus_request("authenticate", token=keys["gone"]), bus_request("authenticate", token=None),
                bus_request("authenticate", user=alice, token=keys["bob"])]
    answered, statements = statements_run(requests)
    # The tokens' query, and the account of the session that authenticates again (bob's, as alice).
    assert len(statements) == 2, statements
    codes = [o.envelope["response"].get("error_code", "ok") for o in answered]
    assert codes == ["ok", "invalid_token", "invalid_token", "invalid_token", "ok"]
    for outgoing, request, code in zip(answered, requests, codes):
        if code != "ok":
            assert_error(outgoing, request, code)
    assert [answered[n].envelope["session_data"] for n in (0, 4)] == [{"user_pk": alice.pk}, {"user_pk": bob.pk}]
    assert answered[4].envelope["response"]["user"] == {"username": "bob"}
    assert all(o.topic == REPLY_TO and o.envelope["send_to"] is None for o in answered)


@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")  # WhiteNoise, before collectstatic
def test_tickets_and_tokens_in_a_row_cost_three_queries(alice, bob, client):
    # The tokens' query; the tickets' accounts and their sessions' logouts.
    client.force_login(alice)
    ticket = tickets.issue(alice, client.session.session_key)
    bobs_token = Token.objects.get(user=bob).key
    requests = [bus_request("authenticate", ticket=ticket), bus_request("authenticate", token="wrong"),
                bus_request("authenticate", ticket="forged"), bus_request("authenticate", token=bobs_token),
                bus_request("authenticate", ticket=ticket)]
    answered, statements = statements_run(requests)
    assert len(statements) == 3, statements
    assert [o.envelope["response"].get("error_code", "ok") for o in answered] == [
        "ok", "invalid_token", "invalid_token", "ok", "ok"]
    assert [o.envelope["session_data"] for o in answered] == [
        {"user_pk": alice.pk}, None, None, {"user_pk": bob.pk}, {"user_pk": alice.pk}]
