"""A WebSocket client on asyncio streams that does only what a test says: it writes any number of
frames in one write, can leave the gateway's Close frame unanswered and send frames after it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

OPCODE_TEXT, OPCODE_CLOSE = 0x1, 0x8


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame, as a client sends it (payloads up to 64 KiB)."""
    mask = os.urandom(4)
    if len(payload) < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload))
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, len(payload))
    return header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def text_frame(frame: dict[str, Any]) -> bytes:
    return masked_frame(OPCODE_TEXT, json.dumps(frame).encode())


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 15.0,
                      receive_buffer: int | None = None) -> RawWebSocket:
        """Connect and handshake. With `receive_buffer` (bytes), the socket's receive buffer and the
        stream's are that small: a client that does not read stalls the server's writes at once."""
        if receive_buffer is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Before connecting, so that the TCP window stays this small (no autotuning).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer, timeout)

    def send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(masked_frame(opcode, payload))

    async def receive(self) -> tuple[int, bytes]:
        """The next frame from the gateway (unmasked): its opcode and payload."""
        async def read() -> tuple[int, bytes]:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return first & 0x0F, await self.reader.readexactly(length)

        return await asyncio.wait_for(read(), self.timeout)

    async def receive_text(self) -> dict[str, Any]:
        """The next text frame's JSON; a close frame fails the test with its code."""
        opcode, payload = await self.receive()
        if opcode == OPCODE_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            raise AssertionError(f"the gateway closed the connection with {code}: {payload[2:]!r}")
        assert opcode == OPCODE_TEXT, (opcode, payload[:200])
        return json.loads(payload)

    def close(self) -> None:
        self.writer.close()
