"""One client connection: its writer drains the bounded queue in order; a full queue closes it with 4008.

Most tests drive a Connection over a recording socket (fakes.FakeWebSocket); the ones about a
client that stops reading run it over a real aiohttp WebSocket whose raw client reads only when
told, so that aiohttp's own flow control is what the close has to get through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import AsyncIterator

from aiohttp import WSMessage, WSMsgType, web
from aiohttp.test_utils import TestServer

from tests.raw_websocket import OPCODE_CLOSE, OPCODE_TEXT, RawWebSocket
from websockets_gateway.closing import close_handshake
from websockets_gateway.connection import CLOSE_SLOW_CONSUMER, Connection
from websockets_gateway.metrics import GatewayMetrics
from websockets_gateway.ratelimit import TokenBucket

from .fakes import WAIT, FakeWebSocket, make_connection, run


def test_user_pk_comes_from_session_data():
    conn = make_connection("c1")
    assert conn.user_pk is None
    conn.session_data = {"user_pk": 3}
    assert conn.user_pk == 3


def test_the_writer_sends_queued_frames_in_order():
    async def scenario():
        ws = FakeWebSocket()
        conn = make_connection("c1", ws)
        conn.send("one")  # queued before the writer starts
        conn.start()
        for text in ("two", "three", "four"):
            conn.send(text)
        await ws.wait_until(lambda: len(ws.sent) == 4)
        assert ws.sent == ["one", "two", "three", "four"]
        assert ws.close_calls == []
        await conn.stop()

    run(scenario())


def test_a_full_queue_closes_the_connection_with_4008_once():
    async def scenario():
        ws = FakeWebSocket()
        conn = Connection("c1", ws, send_queue_size=2, bucket=TokenBucket(1.0, 1))
        conn.send("1")
        conn.send("2")
        assert not conn.closed
        conn.send("3")  # the queue is full: the client is too slow
        assert conn.closed
        conn.send("4")
        conn.send("5")
        await ws.wait_until(lambda: ws.close_calls)
        await conn.stop()
        assert ws.close_calls == [(CLOSE_SLOW_CONSUMER, b"Outgoing queue full")]
        assert ws.sent == []

    run(scenario())


def test_a_client_that_stops_reading_is_disconnected_and_nothing_more_is_written():
    async def scenario():
        reading = asyncio.Event()
        ws = FakeWebSocket(send_gate=reading)
        conn = Connection("c1", ws, send_queue_size=2, bucket=TokenBucket(1.0, 1))
        conn.start()
        conn.send("taken-by-writer")
        # Let the writer take the first frame and block on the socket.
        await asyncio.sleep(0)
        for text in ("queued-1", "queued-2", "overflow", "after-close"):
            conn.send(text)
        await ws.wait_until(lambda: ws.close_calls)
        # The client reads again: the send under way completes (a send cancelled at the close
        # would have written nothing), and the writer stops there.
        reading.set()
        await ws.wait_until(lambda: ws.sent == ["taken-by-writer"])
        await conn.stop()
        assert ws.close_calls == [(CLOSE_SLOW_CONSUMER, b"Outgoing queue full")]
        # The frame the writer had in hand was on its way (aiohttp writes a frame before it waits
        # for the client to read it); nothing queued behind it is written.
        assert ws.sent == ["taken-by-writer"]

    run(scenario())


# A frame larger than every buffer between the server and a client that does not read (the
# client's socket and stream buffers, the server's socket buffer, the transport's 64 KiB before it
# pauses): the writer that sends it waits for the client to read, on aiohttp's drain future.
BIG_FRAME = "x" * (1 << 20)
SMALL_BUFFER = 4096


class StalledClient:
    """A Connection on a real aiohttp WebSocket, and the raw client at its other end, whose socket
    buffers are small and which reads only when the test calls `client.receive`."""

    def __init__(self, conn: Connection, client: RawWebSocket, aborted: asyncio.Event, metrics: GatewayMetrics):
        self.conn, self.client, self.aborted, self.metrics = conn, client, aborted, metrics

    def closes(self, code: int) -> float:
        return self.metrics.registry.get_sample_value(
            "chat_gateway_closes_total", {"gateway_id": "gw-test", "code": str(code)}) or 0.0


@contextlib.asynccontextmanager
async def stalled_client(send_queue_size: int, close_timeout: float) -> AsyncIterator[StalledClient]:
    opened: asyncio.Future[StalledClient] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()
    metrics = GatewayMetrics("gw-test")

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        aborted = asyncio.Event()

        def abort() -> None:
            aborted.set()
            request.transport.abort()

        conn = Connection("c1", ws, send_queue_size, TokenBucket(1.0, 1), abort=abort,
                          close_timeout=close_timeout, metrics=metrics)
        conn.start()
        opened.set_result(StalledClient(conn, None, aborted, metrics))
        await release.wait()  # the handler reads nothing: the close handshake reads the Close reply
        await conn.stop()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with TestServer(app) as server:
        client = await RawWebSocket.connect(server.host, server.port, timeout=WAIT, receive_buffer=SMALL_BUFFER)
        stalled = await asyncio.wait_for(opened, WAIT)
        stalled.client = client
        try:
            yield stalled
        finally:
            release.set()
            client.close()


def _fill_until_closed(conn: Connection) -> None:
    n = 0
    while not conn.closed:
        conn.send(f"frame-{n}")
        n += 1


def test_a_client_that_never_reads_is_aborted_after_the_close_timeout(caplog):
    async def scenario():
        async with stalled_client(send_queue_size=2, close_timeout=0.05) as stalled:
            conn = stalled.conn
            conn.send(BIG_FRAME)
            await asyncio.sleep(0)  # the writer is now waiting for the client to read
            _fill_until_closed(conn)
            # The writer's send is left alone (Outbox.close): cancelled, it would cancel aiohttp's
            # drain future under the close handshake too. Either way the socket must not stay open.
            await asyncio.wait_for(stalled.aborted.wait(), WAIT)
            assert stalled.closes(CLOSE_SLOW_CONSUMER) == 1
            await asyncio.wait_for(conn.stop(), WAIT)

    run(scenario())
    assert "close handshake (4008)" in caplog.text and "aborting the socket" in caplog.text


def test_a_slow_client_that_reads_again_in_time_gets_the_close_frame_and_no_abort():
    async def scenario():
        async with stalled_client(send_queue_size=2, close_timeout=WAIT) as stalled:
            conn, client = stalled.conn, stalled.client
            conn.send(BIG_FRAME)
            await asyncio.sleep(0)
            _fill_until_closed(conn)
            # The client reads again: the frame the writer had in hand, then the Close frame, and
            # nothing that was queued behind it.
            assert await client.receive() == (OPCODE_TEXT, BIG_FRAME.encode())
            opcode, payload = await client.receive()
            assert opcode == OPCODE_CLOSE
            assert (struct.unpack("!H", payload[:2])[0], payload[2:]) == (CLOSE_SLOW_CONSUMER, b"Outgoing queue full")
            client.send(OPCODE_CLOSE, payload[:2])  # its Close reply: the handshake completes
            assert await asyncio.wait_for(client.reader.read(), WAIT) == b""  # then the server ends the TCP connection
            await asyncio.wait_for(conn.stop(), WAIT)
            assert not stalled.aborted.is_set()

    run(scenario())


# The close handshake alone (closing.py)

def _handshake(ws: FakeWebSocket, aborted: list[int], timeout: float = WAIT, code: int = CLOSE_SLOW_CONSUMER):
    return close_handshake(ws, code, "Outgoing queue full", timeout, lambda: aborted.append(1), {"conn_id": "c1"})


def test_a_close_interrupted_by_a_cancellation_not_its_own_aborts_the_socket(caplog):
    class InterruptedClose(FakeWebSocket):
        async def close(self, *, code: int, message: bytes = b"") -> bool:
            self.close_calls.append((code, message))
            raise asyncio.CancelledError  # a shared future cancelled by another task

    async def scenario():
        aborted: list[int] = []
        handshake = asyncio.create_task(_handshake(InterruptedClose(), aborted))
        await asyncio.wait({handshake}, timeout=WAIT)
        assert handshake.done() and not handshake.cancelled() and handshake.exception() is None
        assert aborted == [1]

    run(scenario())
    assert "close handshake (4008) interrupted" in caplog.text


def test_cancelling_the_close_handshake_itself_is_not_swallowed():
    class HangingClose(FakeWebSocket):
        async def close(self, *, code: int, message: bytes = b"") -> bool:
            self.close_calls.append((code, message))
            self._activity.set()
            await asyncio.Event().wait()
            return True

    async def scenario():
        aborted: list[int] = []
        ws = HangingClose()
        handshake = asyncio.create_task(_handshake(ws, aborted, code=4001))
        await ws.wait_until(lambda: ws.close_calls)
        handshake.cancel()
        await asyncio.wait({handshake})
        assert handshake.cancelled()
        assert aborted == []

    run(scenario())


async def read_one(conn: Connection, ws: FakeWebSocket) -> WSMessage | None:
    """What the handler's read loop does for one frame (views.websocket): None if a close ended the wait."""
    conn.reader = asyncio.current_task()
    try:
        return await ws.receive()
    except asyncio.CancelledError:
        if not conn.read_interrupted():
            raise
        return None
    finally:
        conn.reader = None


async def waiting_reader() -> tuple[Connection, FakeWebSocket, asyncio.Task[WSMessage | None]]:
    """A connection whose read loop waits for the client's next frame."""
    ws = FakeWebSocket()
    conn = make_connection("c1", ws)
    reading = asyncio.create_task(read_one(conn, ws))
    await ws.wait_until(lambda: ws.receiving)
    return conn, ws, reading


def test_a_close_ends_the_read_loops_wait_for_a_frame_before_the_handshake_begins():
    async def scenario():
        conn, ws, reading = await waiting_reader()
        conn.close(1001, "Server shutting down")
        assert await asyncio.wait_for(reading, WAIT) is None
        await conn.stop()
        # The handshake found nobody reading: aiohttp then reads until the client's Close itself.
        assert ws.close_calls == [(1001, b"Server shutting down")]
        assert ws.closed_while_receiving == [False]
        assert conn.reader is None

    run(scenario())


def test_a_frame_is_read_as_it_comes_when_nothing_closes():
    async def scenario():
        conn, ws, reading = await waiting_reader()
        frame = WSMessage(WSMsgType.TEXT, '{"uuid": "u1", "action": "ping"}', None)
        assert conn.reader is reading
        ws.incoming.put_nowait(frame)
        assert await asyncio.wait_for(reading, WAIT) is frame
        assert conn.reader is None

    run(scenario())


def test_a_read_cancelled_by_another_as_well_as_by_the_close_stays_cancelled():
    async def scenario():
        conn, ws, reading = await waiting_reader()
        conn.close(1001, "Server shutting down")
        reading.cancel()  # aiohttp's, say: the handler cancelled on a lost connection
        await asyncio.wait({reading})
        await conn.stop()
        assert reading.cancelled()

    run(scenario())


def test_a_read_cancelled_by_another_alone_stays_cancelled():
    async def scenario():
        conn, ws, reading = await waiting_reader()
        reading.cancel()
        await asyncio.wait({reading})
        assert reading.cancelled()
        assert ws.close_calls == []

    run(scenario())


def test_close_is_idempotent():
    async def scenario():
        ws = FakeWebSocket()
        conn = make_connection("c1", ws)
        conn.start()
        conn.close(4001, "Authentication timeout")
        conn.close(1003, "second close")
        conn.send("ignored")
        await conn.stop()
        assert ws.close_calls == [(4001, b"Authentication timeout")]
        assert ws.sent == []

    run(scenario())


def test_stop_ends_the_writer_and_later_sends_are_ignored():
    async def scenario():
        ws = FakeWebSocket()
        conn = make_connection("c1", ws)
        conn.start()
        conn.send("before")
        await ws.wait_until(lambda: ws.sent == ["before"])
        await conn.stop()
        assert conn.closed
        # The writer ended when the queue was empty (an idle connection has none), or here.
        assert not conn.outbox.writing
        conn.send("after")
        assert ws.sent == ["before"]
        assert ws.close_calls == []  # stop() is for a socket already done; it does not close it

    run(scenario())


def test_a_write_error_stops_the_writer_quietly(caplog):
    class BrokenWebSocket(FakeWebSocket):
        async def send_str(self, text):
            self.sent.append(text)
            self._activity.set()
            raise ConnectionResetError("peer went away")

    async def scenario():
        ws = BrokenWebSocket()
        conn = make_connection("c1", ws)
        conn.start()
        conn.send("lost")
        await ws.wait_until(lambda: ws.sent)
        await asyncio.sleep(0)  # the writer, woken first, has handled the error and ended
        assert not conn.outbox.writing
        conn.send("after")  # a writer that failed for good starts no other
        await asyncio.sleep(0)
        assert ws.sent == ["lost"] and not conn.outbox.writing
        await conn.stop()

    with caplog.at_level(logging.INFO, logger="websockets_gateway"):
        run(scenario())
    assert "write failed, connection gone: peer went away" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_an_error_while_closing_is_logged_not_raised(caplog):
    class FailingCloseWebSocket(FakeWebSocket):
        async def close(self, *, code, message=b""):
            raise RuntimeError("transport already gone")

    async def scenario():
        conn = make_connection("c1", FailingCloseWebSocket())
        conn.close(4008, "Outgoing queue full")
        await conn.stop()  # waits for the close handshake; must not raise
        aborted: list[int] = []
        assert await _handshake(FailingCloseWebSocket(), aborted) is None  # logged, not raised
        assert aborted == [1]

    run(scenario())
    assert "error while closing with 4008" in caplog.text


def test_a_close_that_hangs_aborts_the_socket():
    class HangingClose(FakeWebSocket):
        async def close(self, *, code: int, message: bytes = b"") -> bool:
            self.close_calls.append((code, message))
            await asyncio.Event().wait()  # the client never takes the close frame
            return True

    async def scenario():
        aborted = asyncio.Event()
        ws = HangingClose()
        conn = Connection("c1", ws, send_queue_size=1, bucket=TokenBucket(1.0, 1), abort=aborted.set,
                          close_timeout=0.05)
        conn.start()
        conn.close(4008, "Outgoing queue full")
        await asyncio.wait_for(aborted.wait(), WAIT)
        assert ws.close_calls == [(4008, b"Outgoing queue full")]
        await conn.stop()

    run(scenario())


def test_an_idle_connection_holds_no_writer_and_no_queue():
    async def scenario():
        ws = FakeWebSocket()
        conn = make_connection("c1", ws)
        conn.start()
        assert conn.outbox.idle
        conn.send("one")
        conn.send("two")
        assert not conn.outbox.idle and conn.outbox.writing
        await ws.wait_until(lambda: ws.sent == ["one", "two"])
        await asyncio.sleep(0)  # the writer finds the queue empty
        # Drained: the task ended and the queue is gone, until the next frame.
        assert conn.outbox.idle
        conn.send("three")
        assert conn.outbox.writing
        await ws.wait_until(lambda: ws.sent == ["one", "two", "three"])
        first_writer = ws.senders[0]
        assert ws.senders == [first_writer, first_writer, ws.senders[2]] and ws.senders[2] is not first_writer
        await conn.stop()
        assert ws.close_calls == []

    run(scenario())


def test_frames_queued_during_a_send_are_written_in_order_by_the_same_writer():
    async def scenario():
        reading = asyncio.Event()
        ws = FakeWebSocket(send_gate=reading)
        conn = make_connection("c1", ws)
        conn.start()
        conn.send("first")
        await asyncio.sleep(0)  # the writer is in its send, waiting for the client to read
        for text in ("second", "third"):
            conn.send(text)
        reading.set()
        await ws.wait_until(lambda: len(ws.sent) == 3)
        assert ws.sent == ["first", "second", "third"]
        writer = ws.senders[0]
        assert ws.senders == [writer, writer, writer]
        await conn.stop()

    run(scenario())


def test_stop_cancels_a_writer_stuck_in_a_send():
    async def scenario():
        ws = FakeWebSocket(send_gate=asyncio.Event())  # a client that never reads
        conn = make_connection("c1", ws)
        conn.start()
        conn.send("stuck")
        await asyncio.sleep(0)
        [writer] = ws.senders
        await asyncio.wait_for(conn.stop(), WAIT)
        assert writer.cancelled()
        conn.send("after")
        assert len(conn.outbox) == 0 and ws.sent == []

    run(scenario())


def test_bytes_are_sent_as_a_text_frame_as_they_are():
    class FrameRecorder(FakeWebSocket):
        def __init__(self):
            super().__init__()
            self.frames = []

        async def send_frame(self, message, opcode):
            self.frames.append((message, opcode))
            await super().send_frame(message, opcode)

    async def scenario():
        ws = FrameRecorder()
        conn = make_connection("c1", ws)
        conn.start()
        payload = '{"text":"é"}'.encode()
        conn.send(payload)
        await ws.wait_until(lambda: ws.frames)
        [(sent, opcode)] = ws.frames
        assert sent is payload and opcode == WSMsgType.TEXT
        await conn.stop()

    run(scenario())


def test_a_connection_has_no_instance_dict():
    # __slots__: an idle connection is one of thousands.
    conn = make_connection("c1")
    assert not hasattr(conn, "__dict__") and not hasattr(conn.outbox, "__dict__")


# The read loop does not outrun the writer (Connection.read_pause)

async def _paused_reader(conn: Connection) -> str:
    """What the read loop in views.py does before each read: wait out a pause. 'read' when it would
    read, 'interrupted' when a close ended the pause."""
    conn.reader = asyncio.current_task()
    try:
        while True:
            pause = conn.read_pause()
            if pause is None:
                return "read"
            await pause
    except asyncio.CancelledError:
        if not conn.read_interrupted():
            raise
        return "interrupted"
    finally:
        conn.reader = None


def test_reading_pauses_while_half_the_queue_waits_and_resumes_as_the_writer_drains():
    async def scenario():
        reading = asyncio.Event()
        ws = FakeWebSocket(send_gate=reading)
        conn = make_connection("c1", ws, send_queue_size=8)
        conn.start()
        conn.send("taken-by-writer")
        await asyncio.sleep(0)  # the writer holds it, waiting for the client
        for n in range(3):
            conn.send(f"queued-{n}")
        assert conn.read_pause() is None  # 3 of 8 waiting: read on
        conn.send("queued-3")
        reader = asyncio.create_task(_paused_reader(conn))
        await asyncio.sleep(0.05)
        assert not reader.done()  # 4 of 8 waiting: paused
        reading.set()  # the client reads: the writer drains below half, and the loop reads again
        assert await asyncio.wait_for(reader, WAIT) == "read"
        await ws.wait_until(lambda: len(ws.sent) == 5)
        assert not conn.closed
        await conn.stop()

    run(scenario())


def test_a_close_ends_a_paused_read_as_it_ends_a_read():
    async def scenario():
        ws = FakeWebSocket(send_gate=asyncio.Event())  # a client that never reads
        conn = make_connection("c1", ws, send_queue_size=4)
        conn.start()
        conn.send("taken-by-writer")
        await asyncio.sleep(0)
        conn.send("queued-1")
        conn.send("queued-2")
        reader = asyncio.create_task(_paused_reader(conn))
        await asyncio.sleep(0.05)
        assert not reader.done()
        conn.close(CLOSE_SLOW_CONSUMER, "test")
        assert await asyncio.wait_for(reader, WAIT) == "interrupted"
        await ws.wait_until(lambda: ws.close_calls)
        await conn.stop()

    run(scenario())


async def _half_full(ws: FakeWebSocket) -> Connection:
    """A connection of two frames' queue whose writer holds one frame and one more waits: half full,
    so its read loop is paused."""
    conn = make_connection("c1", ws, send_queue_size=2)
    conn.start()
    conn.send("taken-by-writer")
    await asyncio.sleep(0)
    conn.send("queued-1")
    return conn


def test_a_paused_read_is_cancelled_like_any_other_wait():
    async def scenario():
        conn = await _half_full(FakeWebSocket(send_gate=asyncio.Event()))
        reader = asyncio.create_task(_paused_reader(conn))
        await asyncio.sleep(0.05)
        reader.cancel()  # the handler's task cancelled (not a close): the CancelledError goes on
        await asyncio.wait({reader})
        assert reader.cancelled()
        # A later pause is a fresh one, not the cancelled future.
        pause = conn.read_pause()
        assert pause is not None and not pause.done()
        await conn.stop()
        assert pause.done()  # stopping ends the pause too

    run(scenario())


def test_a_writer_that_failed_for_good_ends_the_pause():
    class FailingAfterGate(FakeWebSocket):
        async def send_str(self, text: str) -> None:
            await self.send_gate.wait()
            raise ConnectionResetError("gone")

    async def scenario():
        gate = asyncio.Event()
        conn = await _half_full(FailingAfterGate(send_gate=gate))
        reader = asyncio.create_task(_paused_reader(conn))
        await asyncio.sleep(0.05)
        assert not reader.done()
        gate.set()  # the send fails: no writer will drain the queue any more
        assert await asyncio.wait_for(reader, WAIT) == "read"
        await conn.stop()

    run(scenario())


def test_an_idle_connection_holds_no_queue_and_no_pause():
    async def scenario():
        ws = FakeWebSocket()
        conn = make_connection("c1", ws, send_queue_size=2)
        conn.start()
        conn.send("one")
        conn.send("two")
        await ws.wait_until(lambda: len(ws.sent) == 2)
        await asyncio.sleep(0)
        assert conn.read_pause() is None
        assert conn.outbox.idle
        await conn.stop()

    run(scenario())
