"""HTTP handlers: the `/ws` WebSocket endpoint, `/healthz` and `/metrics`."""

from __future__ import annotations

import asyncio
import itertools
import logging

from aiohttp import WSMsgType, web
from prometheus_client.exposition import choose_encoder

from . import protocol
from .bus import BusError, NoWorkerAvailable
from .clients import client_address
from .connection import CLOSE_UNSUPPORTED_DATA, Connection
from .ratelimit import TokenBucket
from .requests import TooManyInFlight
from .state import GATEWAY_KEY, Gateway

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("websockets_gateway.security")

_connection_numbers = itertools.count(1)
# What ends a connection's read loop (as it ends aiohttp's `async for`).
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


async def healthz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    redis_ok = gateway.bus.subscribed.is_set() and await gateway.bus.ping()
    body = {
        "status": "ok" if redis_ok else "unavailable",
        "redis": redis_ok,
        "gateway_id": gateway.gateway_id,
        "connections": len(gateway.registry),
        "in_flight": len(gateway.pending),
    }
    return web.json_response(body, status=200 if redis_ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """This process's metrics, in the Prometheus text format (or OpenMetrics, if the scraper asks)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[GATEWAY_KEY].metrics.registry),
                        headers={"Content-Type": content_type})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    gateway = request.app[GATEWAY_KEY]
    settings = gateway.settings
    # The client's address, through the trusted proxies' X-Forwarded-For (clients.py).
    address = client_address(request.remote, request.headers.getall("X-Forwarded-For", ()), settings.trusted_proxies)
    origin = request.headers.get("Origin")
    if origin is not None and settings.allowed_origins is not None and origin not in settings.allowed_origins:
        security_logger.warning("refused handshake from origin %.200r (client %s)", origin, address)
        raise web.HTTPForbidden(text="Origin not allowed")
    if len(gateway.registry) >= settings.max_connections:
        logger.warning("refused a connection from %s: %d connections open", address, len(gateway.registry))
        raise web.HTTPServiceUnavailable(text="Gateway full")
    if not gateway.per_address.acquire(address):
        logger.warning("refused a connection from %s: %d connections open from it", address,
                       gateway.per_address.count(address))
        raise web.HTTPServiceUnavailable(text="Too many connections from this address")

    try:
        # Pings and pongs come to the loop below (autoping off): the gateway's one heartbeat
        # (heartbeat.py) hears every frame, a pong included, instead of aiohttp's timers per connection.
        ws = web.WebSocketResponse(
            protocols=protocol.SUBPROTOCOLS,
            max_msg_size=settings.ws_max_message_size,
            compress=settings.ws_compression,
            autoping=False,
        )
        await ws.prepare(request)
    except BaseException:
        gateway.per_address.release(address)  # the handshake failed: this connection never opened
        raise
    conn = Connection(
        f"{gateway.gateway_id}-{next(_connection_numbers)}", ws, settings.send_queue_size,
        TokenBucket(settings.rate_limit, settings.rate_burst),
        abort=request.transport.abort if request.transport is not None else None,
        metrics=gateway.metrics,
    )
    gateway.registry.add(conn)
    if gateway.heartbeat is not None:
        gateway.heartbeat.add(conn)
    conn.start()
    gateway.auth_deadlines.start(conn)
    if address == request.remote:
        logger.info("opened from %s", address, extra=conn.log_context)
    else:
        logger.info("opened from %s (through proxy %s)", address, request.remote, extra=conn.log_context)
    try:
        while True:
            # `ws.receive()` rather than `async for message in ws`: the iterator's coroutine is one
            # object more (216 bytes) that every idle connection would hold while it waits; so is
            # any helper coroutine around it, hence the close's interruption is handled here.
            conn.reader = asyncio.current_task()
            try:
                # Not past the writer: while half the queue waits for it, the client's next frames
                # stay in the socket (Connection.read_pause). A close ends this wait as a read's.
                pause = conn.read_pause()
                if pause is not None:
                    await pause
                    continue
                message = await ws.receive()
            except asyncio.CancelledError:
                if not conn.read_interrupted():
                    raise
                break  # a close ended the wait: its handshake reads the rest (Connection.close)
            finally:
                conn.reader = None
            if message.type in _CLOSED:
                break
            conn.heard = True
            if message.type == WSMsgType.TEXT:
                gateway.metrics.frames_received.inc()
                if not await _handle_text(gateway, conn, message.data):
                    break
            elif message.type == WSMsgType.BINARY:
                gateway.metrics.frames_received.inc()
                conn.close(CLOSE_UNSUPPORTED_DATA, "Binary frames are not accepted")
                break
            elif message.type == WSMsgType.PING:
                try:
                    await ws.pong(message.data)  # as aiohttp's autoping would
                except ConnectionError as exc:  # the socket closed under the pong: nothing to answer
                    logger.info("pong not sent, connection gone: %s", exc, extra=conn.log_context)
                    break
            elif message.type == WSMsgType.ERROR:
                logger.info("protocol error: %s", ws.exception(), extra=conn.log_context)
                break
    finally:
        gateway.auth_deadlines.cancel(conn)
        if gateway.heartbeat is not None:
            gateway.heartbeat.discard(conn)
        gateway.registry.remove(conn)
        gateway.per_address.release(address)
        gateway.pending.drop_connection(conn)
        await conn.stop()
        logger.info("closed (code %s)", ws.close_code, extra=conn.log_context)
    return ws


async def _handle_text(gateway: Gateway, conn: Connection, text: str) -> bool:
    """Handle one text frame; False when the connection is being closed."""
    try:
        frame = protocol.parse_frame(text)
    except protocol.FrameRejected as exc:
        security_logger.info("closed: %s", exc, extra=conn.log_context)
        conn.close(CLOSE_UNSUPPORTED_DATA, str(exc))
        return False

    if not conn.bucket.allow():
        _answer_here(gateway, conn, frame, protocol.error_reply(frame, "rate_limited", "Too many frames; slow down"))
        return True
    error = protocol.check_frame(frame, authenticated=conn.user_pk is not None)
    if error is not None:
        _answer_here(gateway, conn, frame, error)
        return True
    if frame["action"] == "ping":
        _answer_here(gateway, conn, frame, protocol.ping_reply(frame, len(gateway.registry)))
        return True

    echo = {key: frame[key] for key in ("uuid", "action", "room") if key in frame}
    try:
        pending = gateway.pending.start(conn, echo)
    except TooManyInFlight:
        _answer_here(gateway, conn, frame, protocol.error_reply(frame, "rate_limited", "Too many requests in flight"))
        return True
    request = protocol.bus_request(frame, conn.session_data, pending.request_id, gateway.bus.reply_topic)
    try:
        topic = await gateway.bus.publish_request(request)
    except BusError as exc:
        # Only if the deadline has not answered it meanwhile: every frame gets one reply.
        if gateway.pending.complete(pending.request_id) is not None:
            message = "No worker is available" if isinstance(exc, NoWorkerAvailable) else "Message bus unavailable"
            gateway.metrics.failed(pending.action, "timeout")
            logger.error("not handed to a worker: %s", exc, extra=pending.log_context(
                action=gateway.metrics.action_label(pending.action), status="timeout",
                duration_ms=round(pending.elapsed() * 1000, 2)))
            conn.send(protocol.encode_frame(protocol.error_reply(frame, "timeout", message)))
    else:
        logger.debug("request published",
                     extra=pending.log_context(action=gateway.metrics.action_label(pending.action), topic=topic))
    return True


def _answer_here(gateway: Gateway, conn: Connection, frame: dict, reply: dict) -> None:
    """Send a reply the gateway gives without a worker (ping, a refused frame), counting it.

    Logged at DEBUG only: a client can make as many of these as it sends frames.
    """
    conn.send(protocol.encode_frame(reply))
    action = gateway.metrics.action_label(frame.get("action"))
    status = gateway.metrics.answered(action, reply)
    logger.debug("request answered by the gateway", extra={**conn.log_context, "action": action, "status": status})
