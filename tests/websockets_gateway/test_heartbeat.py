"""The gateway's heartbeat (heartbeat.py): one timer per process pings idle connections and drops
the ones that stopped answering. First its rules, tick by tick; then over real sockets."""

from __future__ import annotations

import pytest
from aiohttp import WSMsgType

from websockets_gateway.connection import Connection
from websockets_gateway.heartbeat import BUCKETS, MIN_TICK, VISITS_PER_INTERVAL, Heartbeat
from websockets_gateway.ratelimit import TokenBucket
from websockets_gateway.state import GATEWAY_KEY

from .fakes import WAIT, FakeWebSocket, run
from .test_views import request, serving, wait_until


class Watched:
    """A connection under a heartbeat, with a record of its socket being aborted."""

    def __init__(self, heartbeat: Heartbeat, name: str = "c1") -> None:
        self.aborted = 0
        self.conn = Connection(name, FakeWebSocket(), send_queue_size=8, bucket=TokenBucket(100.0, 100),
                               abort=self._abort)
        heartbeat.add(self.conn)

    def _abort(self) -> None:
        self.aborted += 1

    @property
    def pings(self) -> int:
        """The pings queued: nothing else is sent to it, and it is never started, so they stay queued."""
        return len(self.conn.outbox)


def turn(heartbeat: Heartbeat, times: int = 1) -> None:
    """A quarter interval, `times` over: every bucket visited once per quarter."""
    for _ in range(BUCKETS * times):
        heartbeat.visit_next_bucket()


def test_a_silent_connection_is_pinged_after_an_interval_and_dropped_half_an_interval_later():
    assert VISITS_PER_INTERVAL == 4
    heartbeat = Heartbeat(30.0)
    watched = Watched(heartbeat)
    turn(heartbeat)  # heard when added: the first quarter counts as heard
    turn(heartbeat, 3)  # silent for three quarters of an interval
    assert watched.pings == 0 and not watched.conn.closed
    turn(heartbeat)  # silent for an interval: pinged
    assert watched.pings == 1 and not watched.conn.closed
    turn(heartbeat)  # a quarter more: still waiting
    assert watched.aborted == 0 and not watched.conn.closed
    turn(heartbeat)  # the ping unanswered for half an interval: dropped
    assert watched.aborted == 1 and watched.conn.closed
    assert len(heartbeat) == 0 and heartbeat.bucket_of(watched.conn) is None


def test_a_connection_that_sends_frames_is_never_pinged():
    heartbeat = Heartbeat(30.0)
    watched = Watched(heartbeat)
    for _ in range(10):
        watched.conn.heard = True  # what the handler does on every frame
        turn(heartbeat)
    assert watched.pings == 0 and watched.aborted == 0 and not watched.conn.closed


def test_an_answered_ping_keeps_the_connection_and_the_next_comes_an_interval_later():
    heartbeat = Heartbeat(30.0)
    watched = Watched(heartbeat)
    turn(heartbeat, 5)
    assert watched.pings == 1
    watched.conn.heard = True  # the pong
    turn(heartbeat, 4)
    assert watched.pings == 1 and not watched.conn.closed
    turn(heartbeat)  # silent for an interval since the pong
    assert watched.pings == 2 and watched.aborted == 0


def test_each_tick_visits_one_bucket_and_a_new_connection_waits_a_full_turn():
    heartbeat = Heartbeat(16.0)
    assert heartbeat.tick == pytest.approx(16.0 / 4 / BUCKETS)
    first = Watched(heartbeat, "first")
    heartbeat.visit_next_bucket()
    second = Watched(heartbeat, "second")
    assert heartbeat.bucket_of(first.conn) != heartbeat.bucket_of(second.conn)
    # `first` was added just before the first tick: it is visited last of this turn.
    for _ in range(BUCKETS - 1):
        assert first.conn.heard
        heartbeat.visit_next_bucket()
    assert not first.conn.heard and second.conn.heard
    heartbeat.visit_next_bucket()
    assert not second.conn.heard


def test_a_discarded_or_closing_connection_is_not_pinged():
    heartbeat = Heartbeat(30.0)
    gone, closing = Watched(heartbeat, "gone"), Watched(heartbeat, "closing")
    heartbeat.discard(gone.conn)
    heartbeat.discard(gone.conn)  # twice: a no-op
    closing.conn.closed = True
    turn(heartbeat, 8)
    assert gone.pings == closing.pings == 0 and gone.aborted == closing.aborted == 0
    assert len(heartbeat) == 1  # the closing one waits for its handler to discard it


def test_the_interval_must_be_positive_and_the_tick_is_bounded_below():
    with pytest.raises(ValueError):
        Heartbeat(0)
    assert Heartbeat(0.001).tick == MIN_TICK


# Over real sockets: the app with a short heartbeat (0.4 s: pinged after 0.4–0.5 s of silence).

HEARTBEAT = 0.4


def test_a_client_that_does_not_answer_pings_is_dropped(redis_server):
    async def scenario():
        async with serving(ws_heartbeat=HEARTBEAT) as (client, app):
            gateway = app[GATEWAY_KEY]
            ws = await client.ws_connect("/ws", autoping=False)
            ping = await ws.receive(timeout=WAIT)
            assert ping.type == WSMsgType.PING
            ended = await ws.receive(timeout=WAIT)  # no pong sent: the socket is aborted
            assert ended.type in (WSMsgType.CLOSED, WSMsgType.ERROR), ended
            await wait_until(lambda: len(gateway.registry) == 0 and len(gateway.heartbeat) == 0)
            metrics = await (await client.get("/metrics")).text()
            assert 'code="1006"' in metrics

    run(scenario())


def test_a_client_that_answers_pings_stays_connected(redis_server):
    async def scenario():
        async with serving(ws_heartbeat=HEARTBEAT) as (client, app):
            ws = await client.ws_connect("/ws", autoping=False)
            for _ in range(3):  # three pings, each answered: three intervals and more
                ping = await ws.receive(timeout=WAIT)
                assert ping.type == WSMsgType.PING
                await ws.pong(ping.data)
            reply = await request(ws, {"uuid": "p", "action": "ping"})
            assert reply["status"] == "success"
            assert len(app[GATEWAY_KEY].registry) == 1

    run(scenario())


def test_a_client_ping_gets_its_pong(redis_server):
    async def scenario():
        async with serving() as (client, app):
            assert app[GATEWAY_KEY].heartbeat is None  # WS_HEARTBEAT=0: no heartbeat at all
            ws = await client.ws_connect("/ws", autoping=False)
            await ws.ping(b"are you there")
            pong = await ws.receive(timeout=WAIT)
            assert pong.type == WSMsgType.PONG and pong.data == b"are you there"

    run(scenario())
