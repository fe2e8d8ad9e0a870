"""The fault run's TCP proxy: forwards both ways, a freeze holds bytes with the connection open (a
hang, not a refusal), a thaw delivers them, an upstream that goes away ends the connection."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading

import pytest

from bench.tcp_proxy import ProxyThread, TcpProxy

# Waits on events; generous, never a measured bound.
WAIT = 10.0
# How long a frozen proxy is watched for a byte that must not come.
FROZEN_WATCH = 0.5


async def echo_server(writers: list[asyncio.StreamWriter] | None = None) -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if writers is not None:
            writers.append(writer)
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def proxied_echo(port: int) -> tuple[TcpProxy, int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A proxy to the echo server on `port`, and a connection through it that has echoed once."""
    proxy = TcpProxy(port)
    listen = await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", listen)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"ping"
    return proxy, listen, reader, writer


def test_bytes_go_through_and_a_freeze_holds_them_with_the_connection_open():
    async def scenario() -> None:
        server, port = await echo_server()
        proxy, listen, reader, writer = await proxied_echo(port)
        try:
            proxy.freeze()
            writer.write(b"held")
            await writer.drain()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(4), FROZEN_WATCH)
            assert not reader.at_eof()
            # A connection made while frozen is accepted and hangs too.
            late_reader, late_writer = await asyncio.open_connection("127.0.0.1", listen)
            late_writer.write(b"late")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(late_reader.read(4), FROZEN_WATCH)
            proxy.thaw()
            assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"held"
            assert await asyncio.wait_for(late_reader.readexactly(4), WAIT) == b"late"
            writer.close()
            late_writer.close()
        finally:
            await proxy.stop()
            server.close()

    asyncio.run(scenario())


def test_an_upstream_that_goes_away_ends_the_connection_and_a_refused_one_closes_at_once():
    async def scenario() -> None:
        writers: list[asyncio.StreamWriter] = []
        server, port = await echo_server(writers)
        proxy, listen, reader, writer = await proxied_echo(port)
        try:
            server.close()
            for upstream in writers:
                upstream.close()
            assert await asyncio.wait_for(reader.read(4), WAIT) == b""
            refused_reader, _ = await asyncio.open_connection("127.0.0.1", listen)
            assert await asyncio.wait_for(refused_reader.read(4), WAIT) == b""
        finally:
            await proxy.stop()

    asyncio.run(scenario())


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


def test_the_proxy_thread_forwards_for_blocking_callers_and_freezes():
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        proxy = ProxyThread(server.server_address[1])
        try:
            # A blocking client: the proxy's own loop, in its thread, does the forwarding.
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT) as sock:
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
                proxy.freeze()
                sock.sendall(b"held")
                sock.settimeout(FROZEN_WATCH)
                with pytest.raises(TimeoutError):
                    sock.recv(4)
                proxy.thaw()
                sock.settimeout(WAIT)
                assert sock.recv(4) == b"held"
        finally:
            proxy.close()
            server.shutdown()


def test_a_severed_connection_stays_open_and_silent_while_new_ones_flow():
    async def scenario() -> None:
        server, port = await echo_server()
        proxy, listen, reader, writer = await proxied_echo(port)
        try:
            proxy.sever()
            writer.write(b"lost")
            fresh_reader, fresh_writer = await asyncio.open_connection("127.0.0.1", listen)
            fresh_writer.write(b"new!")
            assert await asyncio.wait_for(fresh_reader.readexactly(4), WAIT) == b"new!"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(4), FROZEN_WATCH)
            assert not reader.at_eof()
            writer.close()
            fresh_writer.close()
        finally:
            await proxy.stop()
            server.close()

    asyncio.run(scenario())
