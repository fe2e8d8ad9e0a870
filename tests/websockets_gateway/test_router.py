"""Reply routing: to the requesting connection alone, or to every connection of `send_to`."""

from __future__ import annotations

import asyncio
import json

import fakeredis
import pytest

from websockets_gateway.auth_deadline import AuthDeadlines
from websockets_gateway.metrics import GatewayMetrics
from websockets_gateway.outbox import Hold
from websockets_gateway.presence import PresenceWriter
from websockets_gateway.registry import ConnectionRegistry
from websockets_gateway.requests import PendingRequests
from websockets_gateway.router import ReplyRouter, send_timeout_reply

from .fakes import WAIT, connected, make_connection, run

GATEWAY_ID = "gw-test"


def _router(timeout=60.0, on_timeout=send_timeout_reply):
    registry = ConnectionRegistry()
    pending = PendingRequests(GATEWAY_ID, timeout, max_in_flight=8, on_timeout=on_timeout)
    return registry, pending, ReplyRouter(registry, pending)


def _envelope(request_id, response, send_to=None, session_data=None, **extra):
    return json.dumps({
        "type": "success_response",
        "request_id": request_id,
        "send_to": send_to,
        "session_data": session_data,
        "response": response,
        **extra,
    }).encode()


RESPONSE = {"uuid": "u1", "action": "select_room", "room": "r1", "status": "success", "room_messages": []}


def test_a_reply_without_send_to_goes_to_the_requester_only():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        same_user = connected(registry, "c2", user_pk=1)
        other = connected(registry, "c3", user_pk=2)
        request = pending.start(requester, {"uuid": "u1", "action": "select_room", "room": "r1"})

        router.route(_envelope(request.request_id, RESPONSE))

        assert requester.received == [RESPONSE]
        assert same_user.received == []
        assert other.received == []
        assert len(pending) == 0
        assert request.timer.cancelled()

    run(scenario())


def test_route_accepts_str_as_well_as_bytes():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1"})
        router.route(_envelope(request.request_id, RESPONSE).decode())
        assert requester.received == [RESPONSE]

    run(scenario())


def test_a_reply_with_send_to_goes_to_every_connection_of_those_users_and_no_one_else():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        alice_other_tab = connected(registry, "c2", user_pk=1)
        bob_phone = connected(registry, "c3", user_pk=2)
        bob_laptop = connected(registry, "c4", user_pk=2)
        carol = connected(registry, "c5", user_pk=3)
        anonymous = connected(registry, "c6")
        request = pending.start(requester, {"uuid": "u1", "action": "new_message", "room": "r1"})
        message = {"uuid": "u1", "action": "new_message", "room": "r1", "status": "success", "message": {"id": 1}}

        router.route(_envelope(request.request_id, message, send_to=[1, 2]))

        for conn in (requester, alice_other_tab, bob_phone, bob_laptop):
            assert conn.received == [message], conn.conn_id
        assert carol.received == []
        assert anonymous.received == []
        assert len(pending) == 0

    run(scenario())


def test_a_user_named_twice_in_send_to_gets_the_reply_once():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1"})
        router.route(_envelope(request.request_id, RESPONSE, send_to=[1, 1]))
        assert requester.received == [RESPONSE]

    run(scenario())


def test_the_requester_gets_the_reply_even_when_not_in_send_to():
    async def scenario():
        registry, pending, router = _router()
        sender = connected(registry, "c1", user_pk=1)
        sender_other_tab = connected(registry, "c2", user_pk=1)
        member = connected(registry, "c3", user_pk=2)
        request = pending.start(sender, {"uuid": "u1", "action": "typing", "room": "r1"})
        typing = {"uuid": "u1", "action": "typing", "room": "r1", "status": "success", "user": {"username": "a"}}

        router.route(_envelope(request.request_id, typing, send_to=[2]))

        assert member.received == [typing]
        assert sender.received == [typing]
        assert sender_other_tab.received == []

    run(scenario())


TYPING = {"uuid": "u1", "action": "typing", "room": "r1", "status": "success", "user": {"username": "a"}}


def test_requester_reply_false_keeps_the_reply_from_a_requester_not_in_send_to():
    async def scenario():
        registry, pending, router = _router()
        typist = connected(registry, "c1", user_pk=1)
        typist_other_tab = connected(registry, "c2", user_pk=1)
        member_phone = connected(registry, "c3", user_pk=2)
        member_laptop = connected(registry, "c4", user_pk=2)
        request = pending.start(typist, {"uuid": "u1", "action": "typing", "room": "r1"})

        router.route(_envelope(request.request_id, TYPING, send_to=[2], requester_reply=False))

        assert member_phone.received == [TYPING]
        assert member_laptop.received == [TYPING]
        assert typist.received == []
        assert typist_other_tab.received == []
        # Completed all the same: its deadline is cancelled, so no timeout reply follows.
        assert len(pending) == 0
        assert pending.in_flight(typist) == set()
        assert request.timer.cancelled()

    run(scenario())


def test_requester_reply_false_still_reaches_a_requester_among_send_to():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1"})
        router.route(_envelope(request.request_id, RESPONSE, send_to=[1, 2], requester_reply=False))
        assert requester.received == [RESPONSE]

    run(scenario())


@pytest.mark.parametrize("value", [True, None, 0, "false"], ids=["true", "null", "zero", "string"])
def test_requester_reply_other_than_false_is_the_default(value):
    async def scenario():
        registry, pending, router = _router()
        sender = connected(registry, "c1", user_pk=1)
        request = pending.start(sender, {"uuid": "u1", "action": "typing", "room": "r1"})
        router.route(_envelope(request.request_id, TYPING, send_to=[2], requester_reply=value))
        assert sender.received == [TYPING]

    run(scenario())


def test_requester_reply_false_without_send_to_still_answers_the_requester():
    # With send_to null the reply is the requester's alone; the key only narrows a broadcast.
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1"})
        router.route(_envelope(request.request_id, RESPONSE, requester_reply=False))
        assert requester.received == [RESPONSE]

    run(scenario())


def test_send_to_ignores_entries_that_are_not_user_ids():
    async def scenario():
        registry, pending, router = _router()
        bob = connected(registry, "c2", user_pk=2)
        carol = connected(registry, "c3", user_pk=3)
        router.route(_envelope("other-gw:1", RESPONSE, send_to=["3", None, 2.0, {"pk": 3}, 2]))
        assert bob.received == [RESPONSE]
        assert carol.received == []

    run(scenario())


def test_session_data_updates_the_requester_and_the_user_index():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1")
        request = pending.start(requester, {"uuid": "u1", "action": "authenticate"})
        welcome = {"uuid": "u1", "action": "authenticate", "status": "success", "user": {"username": "alice"}}

        router.route(_envelope(request.request_id, welcome, session_data={"user_pk": 1}))

        assert requester.session_data == {"user_pk": 1}
        assert registry.of_user(1) == {requester}
        assert requester.received == [welcome]

    run(scenario())



def test_authenticating_drops_the_authentication_deadline_and_a_failed_attempt_keeps_it():
    async def scenario():
        registry = ConnectionRegistry()
        pending = PendingRequests(GATEWAY_ID, 60.0, max_in_flight=8, on_timeout=send_timeout_reply)
        deadlines = AuthDeadlines(60.0)
        router = ReplyRouter(registry, pending, auth_deadlines=deadlines)
        requester = connected(registry, "c1")
        deadlines.start(requester)

        # A refused token changes no session: the deadline still runs.
        refused = pending.start(requester, {"uuid": "u0", "action": "authenticate"})
        router.route(_envelope(refused.request_id, {"uuid": "u0", "action": "authenticate", "status": "error",
                                                     "error_code": "invalid_token", "error_message": "x"}))
        assert requester in deadlines and len(deadlines) == 1

        accepted = pending.start(requester, {"uuid": "u1", "action": "authenticate"})
        router.route(_envelope(accepted.request_id, RESPONSE, session_data={"user_pk": 1}))
        assert requester not in deadlines and len(deadlines) == 0

    run(scenario())

def test_session_data_moves_a_reauthenticated_connection_to_its_new_user():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1", "action": "authenticate"})
        router.route(_envelope(request.request_id, RESPONSE, session_data={"user_pk": 2}))
        assert registry.of_user(1) == set()
        assert registry.of_user(2) == {requester}

    run(scenario())


def test_a_broadcast_reply_that_authenticates_reaches_the_requester_under_its_new_user():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1")
        request = pending.start(requester, {"uuid": "u1", "action": "authenticate"})
        router.route(_envelope(request.request_id, RESPONSE, send_to=[5], session_data={"user_pk": 5}))
        assert requester.received == [RESPONSE]  # once: as a member of send_to, not again as requester
        assert registry.of_user(5) == {requester}

    run(scenario())


def test_a_reply_without_session_data_leaves_the_session_alone():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1"})
        router.route(_envelope(request.request_id, RESPONSE, session_data=None))
        assert requester.session_data == {"user_pk": 1}
        assert registry.of_user(1) == {requester}

    run(scenario())


def test_session_data_of_a_closed_requester_is_not_indexed():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1")
        request = pending.start(requester, {"uuid": "u1", "action": "authenticate"})
        requester.closed = True
        router.route(_envelope(request.request_id, RESPONSE, session_data={"user_pk": 1}))
        assert registry.of_user(1) == set()
        assert requester.received == []

    run(scenario())


def test_session_data_in_another_gateways_reply_changes_nothing_here():
    async def scenario():
        registry, pending, router = _router()
        conn = connected(registry, "c1", user_pk=1)
        pending.start(conn, {"uuid": "u1"})
        router.route(_envelope("gw-other:1", RESPONSE, send_to=[1], session_data={"user_pk": 99}))
        assert conn.session_data == {"user_pk": 1}
        assert registry.of_user(99) == set()

    run(scenario())


def test_a_late_reply_without_send_to_is_dropped():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1"})
        pending.complete(request.request_id)  # already answered (or timed out)

        router.route(_envelope(request.request_id, RESPONSE, session_data={"user_pk": 2}))

        assert requester.received == []
        assert requester.session_data == {"user_pk": 1}

    run(scenario())


def test_a_reply_after_the_timeout_is_dropped_and_the_client_saw_only_the_timeout():
    async def scenario():
        fired = asyncio.Event()

        def on_timeout(request):
            send_timeout_reply(request)
            fired.set()

        registry, pending, router = _router(timeout=0.05, on_timeout=on_timeout)
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1", "action": "select_room", "room": "r1"})
        await asyncio.wait_for(fired.wait(), WAIT)

        router.route(_envelope(request.request_id, RESPONSE))

        assert [reply["error_code"] for reply in requester.received] == ["timeout"]

    run(scenario())


def test_a_late_broadcast_reply_still_reaches_send_to():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        member = connected(registry, "c2", user_pk=2)
        request = pending.start(requester, {"uuid": "u1"})
        pending.complete(request.request_id)
        router.route(_envelope(request.request_id, RESPONSE, send_to=[2]))
        assert member.received == [RESPONSE]
        assert requester.received == []

    run(scenario())


def test_another_gateways_request_id_is_not_completed_here():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1"})
        # The same sequence number under another gateway's id.
        foreign_id = "gw-other:" + request.request_id.split(":", 1)[1]

        router.route(_envelope(foreign_id, RESPONSE))

        assert requester.received == []
        assert len(pending) == 1
        assert pending.in_flight(requester) == {request.request_id}
        assert pending.complete(request.request_id) is request

    run(scenario())


def test_another_gateways_broadcast_reaches_our_connections_of_send_to():
    async def scenario():
        registry, pending, router = _router()
        member = connected(registry, "c1", user_pk=1)
        bystander = connected(registry, "c2", user_pk=2)
        router.route(_envelope("gw-other:12", RESPONSE, send_to=[1]))
        assert member.received == [RESPONSE]
        assert bystander.received == []

    run(scenario())


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b"42",
        b'"text"',
        b"null",
        b"{}",
        json.dumps({"request_id": f"{GATEWAY_ID}:1", "send_to": None}).encode(),
        json.dumps({"request_id": f"{GATEWAY_ID}:1", "send_to": None, "response": "ok"}).encode(),
        json.dumps({"request_id": f"{GATEWAY_ID}:1", "send_to": None, "response": ["ok"]}).encode(),
        json.dumps({"request_id": f"{GATEWAY_ID}:1", "send_to": 1, "response": {"status": "success"}}).encode(),
        json.dumps({"request_id": f"{GATEWAY_ID}:1", "send_to": {"1": 1}, "response": {"status": "success"}}).encode(),
        b"not json at all",
        b"\xff\xfe\x00",
    ],
    ids=["array", "number", "string", "null", "empty", "no-response", "response-str", "response-list",
         "send_to-int", "send_to-object", "not-json", "not-utf8"],
)
def test_a_malformed_envelope_is_dropped_without_raising(data, caplog):
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1"})
        assert request.request_id == f"{GATEWAY_ID}:1"

        router.route(data)

        assert requester.received == []
        # The request is still waiting: it will get its timeout reply rather than silence.
        assert pending.complete(request.request_id) is request

    run(scenario())
    assert "malformed reply envelope" in caplog.text


def test_send_timeout_reply_echoes_uuid_action_and_room():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1", user_pk=1)
        request = pending.start(requester, {"uuid": "u1", "action": "new_message", "room": "r1"})
        send_timeout_reply(request)
        assert requester.received == [{
            "uuid": "u1",
            "action": "new_message",
            "room": "r1",
            "status": "error",
            "error_code": "timeout",
            "error_message": "No worker answered in time",
        }]

    run(scenario())


def test_send_timeout_reply_without_a_room():
    async def scenario():
        registry, pending, router = _router()
        requester = connected(registry, "c1")
        request = pending.start(requester, {"uuid": "u9", "action": "authenticate"})
        send_timeout_reply(request)
        (reply,) = requester.received
        assert (reply["uuid"], reply["action"], reply["error_code"]) == ("u9", "authenticate", "timeout")
        assert "room" not in reply

    run(scenario())


# An authenticate reply waits for its user's presence write (presence.py `written`)

WELCOME = {"uuid": "a1", "action": "authenticate", "status": "success", "user": {"username": "bob"}}
NEWS = {"uuid": "n1", "action": "new_message", "room": "r1", "status": "success", "message": {"id": 9}}


def _holding_router(presence_hold_max=60.0):
    """A router whose presence writer is fakeredis, and a started connection on a recording socket."""
    registry = ConnectionRegistry()
    pending = PendingRequests(GATEWAY_ID, 60.0, max_in_flight=8, on_timeout=send_timeout_reply)
    metrics = GatewayMetrics(GATEWAY_ID)
    writer = PresenceWriter(registry, GATEWAY_ID, 15.0, client=fakeredis.FakeAsyncRedis(), metrics=metrics)
    registry.on_presence_change = writer.mark_dirty
    router = ReplyRouter(registry, pending, metrics, presence_written=writer.written,
                         presence_hold_max=presence_hold_max)
    conn = make_connection("c1", metrics=metrics)
    registry.add(conn)
    conn.start()
    return registry, pending, router, writer, conn, metrics


async def _settle():
    """Let the connection's writer run as far as it can."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_an_authenticate_reply_is_held_until_the_users_presence_is_written_and_what_follows_waits_behind_it():
    async def scenario():
        registry, pending, router, writer, conn, _ = _holding_router()
        await writer.sync_once()  # registered, nothing dirty
        request = pending.start(conn, {"uuid": "a1", "action": "authenticate"})
        router.route(_envelope(request.request_id, WELCOME, session_data={"user_pk": 2}))
        # Indexed at once (replies for bob are routed to it), but nothing written to the client yet.
        assert conn in registry.of_user(2)
        router.route(_envelope(None, NEWS, send_to=[2]))
        await _settle()
        assert conn.ws.sent == []

        await writer.sync_once()  # the write that puts bob's presence here in Redis
        await conn.ws.wait_until(lambda: len(conn.ws.sent) == 2)
        assert [json.loads(frame) for frame in conn.ws.sent] == [WELCOME, NEWS]

    run(scenario())


def test_an_authenticate_reply_for_a_user_already_written_here_is_not_held():
    async def scenario():
        registry, pending, router, writer, conn, _ = _holding_router()
        await writer.sync_once()
        connected(registry, "other-tab", user_pk=2)
        await writer.sync_once()
        request = pending.start(conn, {"uuid": "a1", "action": "authenticate"})
        router.route(_envelope(request.request_id, WELCOME, session_data={"user_pk": 2}))
        await conn.ws.wait_until(lambda: len(conn.ws.sent) == 1)

    run(scenario())


def test_a_second_tab_waits_for_the_write_of_its_users_first_tab_still_under_way():
    async def scenario():
        registry, pending, router, writer, conn, _ = _holding_router()
        await writer.sync_once()
        connected(registry, "first-tab", user_pk=2)  # dirty: not written yet
        request = pending.start(conn, {"uuid": "a1", "action": "authenticate"})
        router.route(_envelope(request.request_id, WELCOME, session_data={"user_pk": 2}))
        await _settle()
        assert conn.ws.sent == []
        await writer.sync_once()
        await conn.ws.wait_until(lambda: len(conn.ws.sent) == 1)

    run(scenario())


def test_a_held_reply_goes_after_the_bound_when_presence_is_never_written(caplog):
    async def scenario():
        _, pending, router, writer, conn, metrics = _holding_router(presence_hold_max=0.05)
        # Never registered (Redis down since the start, say): nothing resolves the wait.
        request = pending.start(conn, {"uuid": "a1", "action": "authenticate"})
        router.route(_envelope(request.request_id, WELCOME, session_data={"user_pk": 2}))
        await _settle()
        assert conn.ws.sent == []
        await conn.ws.wait_until(lambda: len(conn.ws.sent) == 1)
        assert metrics.registry.get_sample_value("chat_gateway_presence_hold_timeouts_total",
                                                 {"gateway_id": GATEWAY_ID}) == 1
        assert writer.written(2) is not None  # still unwritten: it was the bound that let it go

    run(scenario())
    assert "authenticate reply sent without its presence written" in caplog.text


def test_a_connection_holds_at_most_one_wait_however_often_it_authenticates():
    async def scenario():
        _, pending, router, writer, conn, _ = _holding_router()
        await writer.sync_once()
        for number, user_pk in enumerate([2, 3, 2, 4]):
            request = pending.start(conn, {"uuid": f"a{number}", "action": "authenticate"})
            router.route(_envelope(request.request_id, WELCOME, session_data={"user_pk": user_pk}))
        queued = list(conn.outbox._queue or ())
        holds = [frame for frame in queued if type(frame) is Hold]
        assert len(holds) == 1 and len(queued) == 5
        await writer.sync_once()
        # Every one of the users it was authenticated as is written before anything goes out.
        await conn.ws.wait_until(lambda: len(conn.ws.sent) == 4)
        assert writer.written(4) is None

    run(scenario())


def test_a_close_ends_a_held_wait():
    async def scenario():
        _, pending, router, writer, conn, _ = _holding_router()
        request = pending.start(conn, {"uuid": "a1", "action": "authenticate"})
        router.route(_envelope(request.request_id, WELCOME, session_data={"user_pk": 2}))
        await _settle()
        await conn.stop()
        assert conn.outbox.idle or not conn.outbox.writing
        assert conn.ws.sent == []

    run(scenario())
