"""A small TCP proxy for fault runs: forwards 127.0.0.1 connections to one upstream port, and can
freeze (stop moving bytes both ways while keeping every connection open: a network partition,
a hang rather than a refusal) and thaw.

`ProxyThread` runs it on an event loop of its own, so that callers that block (the stack's
readiness checks, a client's synchronous Redis calls) never stall the forwarding.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future

logger = logging.getLogger(__name__)

# Bytes read from one side before they are written to the other: each direction of each
# connection holds at most one chunk, so a frozen proxy buffers at most 2 chunks a connection.
CHUNK_SIZE = 64 * 1024
# Connections open at once; one more is closed at once (every part of the stack holds a few).
MAX_CONNECTIONS = 2048
# How long connecting upstream may take once not frozen.
CONNECT_TIMEOUT = 5.0


class TcpProxy:
    """Forwards connections accepted on `listen_port` to `target_port`, both on 127.0.0.1."""

    def __init__(self, target_port: int, listen_port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.listen_port = listen_port
        self._server: asyncio.Server | None = None
        # Set while bytes may flow; cleared by freeze().
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Each open connection's own gate: cleared by sever(), never set again.
        self._gates: dict[asyncio.Task[None], asyncio.Event] = {}
        self.connections_accepted = 0

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self.listen_port

    def freeze(self) -> None:
        """Stop forwarding, both ways, on every connection (new ones wait too); close nothing."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def sever(self) -> None:
        """Abandon every open connection: its bytes never move again and neither side is told
        (a partition that outlives the connections: a NAT or firewall that forgot them, a failover).
        Connections made afterwards flow as usual."""
        for gate in self._gates.values():
            gate.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback that starts a task of ours: stop() cancels it and collects the outcome.
        if len(self._tasks) >= MAX_CONNECTIONS:
            logger.warning("proxy: %d connections open, refusing one more", len(self._tasks))
            writer.close()
            return
        gate = asyncio.Event()
        gate.set()
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer, gate))
        self._tasks.add(task)
        self._gates[task] = gate
        task.add_done_callback(self._forget)
        self.connections_accepted += 1

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._gates.pop(task, None)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        try:
            await self._serve(reader, writer, gate)
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        await self._flowing.wait()
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.target_port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            # Upstream down (Redis restarting): the client sees its connection closed at once,
            # as it would connecting directly.
            logger.debug("proxy: upstream %d unreachable: %r", self.target_port, exc)
            return
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer, gate), self._pipe(upstream_reader, writer, gate))
        finally:
            upstream_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        """Copy one direction until either side ends; then end the other side too."""
        try:
            while True:
                data = await reader.read(CHUNK_SIZE)
                await self._flowing.wait()
                await gate.wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the peer went away: the connection ends, as it would without the proxy
        finally:
            # Closing both ends makes the twin pipe's read end too.
            writer.close()


class ProxyThread:
    """A `TcpProxy` on its own event loop in a daemon thread, driven from synchronous code or
    from another event loop."""

    def __init__(self, target_port: int, listen_port: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self.proxy: TcpProxy = self._call(self._make(target_port, listen_port))
        self.port: int = self._call(self.proxy.start())

    @staticmethod
    async def _make(target_port: int, listen_port: int) -> TcpProxy:
        # Built on the proxy's loop: its Event belongs there.
        return TcpProxy(target_port, listen_port)

    def _call(self, coroutine, timeout: float = 10.0):
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def freeze(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.freeze)

    def thaw(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.thaw)

    def sever(self) -> None:
        self._loop.call_soon_threadsafe(self.proxy.sever)

    def close(self) -> None:
        try:
            self._call(self.proxy.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
