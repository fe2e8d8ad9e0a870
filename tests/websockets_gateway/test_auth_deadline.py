"""The authentication deadline (auth_deadline.py): a connection still anonymous when its time is
up is closed with 4001; one that authenticated, or whose deadline was dropped, is left alone."""

from __future__ import annotations

from websockets_gateway.auth_deadline import AuthDeadlines
from websockets_gateway.connection import CLOSE_AUTH_TIMEOUT

from .fakes import FakeWebSocket, make_connection, run, wait_until




def test_an_anonymous_connection_is_closed_with_4001_when_its_deadline_passes(caplog):
    async def scenario():
        deadlines = AuthDeadlines(0.05)
        ws = FakeWebSocket()
        conn = make_connection("c1", ws)
        deadlines.start(conn)
        assert conn in deadlines and len(deadlines) == 1
        await ws.wait_until(lambda: ws.close_calls)
        await conn.stop()
        assert ws.close_calls == [(CLOSE_AUTH_TIMEOUT, b"Authentication timeout")]
        assert conn not in deadlines and len(deadlines) == 0  # fired: nothing is left to cancel

    run(scenario())
    assert "did not authenticate in time" in caplog.text


def test_the_deadline_closes_only_unauthenticated_connections():
    async def scenario():
        deadlines = AuthDeadlines(0.05)
        anonymous_ws, authenticated_ws = FakeWebSocket(), FakeWebSocket()
        anonymous = make_connection("c1", anonymous_ws)
        authenticated = make_connection("c2", authenticated_ws)
        deadlines.start(anonymous)
        deadlines.start(authenticated)
        # Authenticated, but its deadline not dropped (the router drops it): it fires, and spares it.
        authenticated.session_data = {"user_pk": 1}
        await wait_until(lambda: len(deadlines) == 0)
        await anonymous.stop()
        await authenticated.stop()
        assert anonymous_ws.close_calls == [(CLOSE_AUTH_TIMEOUT, b"Authentication timeout")]
        assert authenticated_ws.close_calls == []

    run(scenario())


def test_a_cancelled_deadline_closes_nothing_and_cancel_is_idempotent():
    async def scenario():
        deadlines = AuthDeadlines(0.05)
        cancelled_ws, watched_ws = FakeWebSocket(), FakeWebSocket()
        cancelled, watched = make_connection("c1", cancelled_ws), make_connection("c2", watched_ws)
        deadlines.start(cancelled)
        deadlines.start(watched)
        deadlines.cancel(cancelled)
        deadlines.cancel(cancelled)
        deadlines.cancel(make_connection("never-started"))
        assert cancelled not in deadlines and len(deadlines) == 1
        # The other deadline, started after it, has fired: the cancelled one would have by then.
        await watched_ws.wait_until(lambda: watched_ws.close_calls)
        assert cancelled_ws.close_calls == [] and not cancelled.closed
        await watched.stop()

    run(scenario())


def test_starting_again_replaces_the_deadline():
    async def scenario():
        deadlines = AuthDeadlines(0.05)
        ws, watched_ws = FakeWebSocket(), FakeWebSocket()
        conn, watched = make_connection("c1", ws), make_connection("c2", watched_ws)
        deadlines.start(conn)
        deadlines.start(conn)
        assert len(deadlines) == 1
        deadlines.cancel(conn)
        deadlines.start(watched)
        # Had the first timer survived the second start, it would have closed `conn` by now.
        await watched_ws.wait_until(lambda: watched_ws.close_calls)
        assert ws.close_calls == [] and not conn.closed
        await watched.stop()

    run(scenario())
