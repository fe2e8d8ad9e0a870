"""Builds the gateway's aiohttp application: `gunicorn websockets_gateway.app:app`."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import AsyncIterator

from aiohttp import web

from . import logs, protocol
from .auth_deadline import AuthDeadlines
from .bus import Bus
from .catalogue import keep_fresh
from .clients import ConnectionsPerAddress
from .connection import CLOSE_GOING_AWAY
from .discovery import WorkerDiscovery
from .heartbeat import Heartbeat
from .identity import claim_gateway_id
from .loop_signals import handle_noted_signals
from .keys import Keys, run_id
from .metrics import GatewayMetrics
from .presence import PresenceWriter
from .registry import ConnectionRegistry
from .requests import PendingRequests
from .router import ReplyRouter, send_timeout_reply
from .settings import GatewaySettings
from .state import GATEWAY_KEY, SETTINGS_KEY, Gateway
from . import views

logger = logging.getLogger(__name__)

# How long start-up waits for the reply subscription (and, with discovery, the first read of the
# worker registry) before serving anyway (healthz says 503 without the subscription).
SUBSCRIBE_WAIT = 5.0


async def gateway_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    # Stable across restarts (metrics series, logs, the reply topic), one live process's at a time.
    gateway_id, slot = claim_gateway_id(settings.gateway_id)
    # This start of the process: the next process to hold the id must not take the replies still
    # on their way to this one, nor keep its presence entries alive; so request ids and presence
    # ids carry it.
    run = run_id(gateway_id, secrets.token_hex(4))
    metrics = GatewayMetrics(gateway_id)
    registry = ConnectionRegistry()
    keys = Keys(settings.response_topic)
    presence = PresenceWriter(registry, run, settings.presence_ttl, settings.redis_url, metrics=metrics, keys=keys,
                              cluster=settings.redis_cluster)
    registry.on_presence_change = presence.mark_dirty
    # After a gap in the bus or in presence, the clients `sync` once replies can reach this process
    # again: its subscription is back (which writes presence anew: Redis may have restarted empty)
    # and its presence is written (replies for several users are routed by it). A registration
    # while the subscription is still down tells no one: the resubscription registers again.
    presence.on_registered_again = lambda: resync_after_bus_gap(registry) if bus.subscribed.is_set() else None
    pending = PendingRequests(run, settings.request_timeout, settings.max_in_flight,
                              on_timeout=send_timeout_reply, metrics=metrics)
    auth_deadlines = AuthDeadlines(settings.auth_timeout)
    router = ReplyRouter(registry, pending, metrics, auth_deadlines, presence_written=presence.written)
    bus = Bus(settings.redis_url, settings.worker_topics, settings.response_topic,
              reply_topic=keys.gateway_reply_topic(gateway_id), on_reply=router.route,
              publish_timeout=min(settings.request_timeout, 5.0),
              on_resubscribed=presence.register_again, metrics=metrics, cluster=settings.redis_cluster)
    metrics.watch(connections=registry.__len__, in_flight=pending.__len__)
    heartbeat = Heartbeat(settings.ws_heartbeat) if settings.ws_heartbeat else None
    if settings.max_in_flight > settings.send_queue_size - settings.send_queue_size // 2:
        # Connection.read_pause: a client's own replies fill at most half the queue plus its
        # requests in flight; past this, a client that bursts can overflow its own queue (4008).
        logger.warning("MAX_IN_FLIGHT=%d is over half of SEND_QUEUE_SIZE=%d: a client's own replies can fill "
                       "its queue", settings.max_in_flight, settings.send_queue_size)
    app[GATEWAY_KEY] = Gateway(gateway_id, settings, registry, pending, router, bus, presence, metrics,
                               auth_deadlines, heartbeat, ConnectionsPerAddress(settings.max_connections_per_ip))
    tasks = {asyncio.create_task(bus.run_subscriber(), name="reply-subscriber"),
             asyncio.create_task(presence.run(), name="presence-writer"),
             asyncio.create_task(keep_fresh(metrics.catalogue, bus.read_catalogue), name="action-catalogue")}
    if heartbeat is not None:
        tasks.add(asyncio.create_task(heartbeat.run(), name="heartbeat"))
    # Without WORKER_PROCESS_TOPICS, the live workers registered in Redis are the choice.
    discovery = WorkerDiscovery(bus.commands, bus.keys, bus.topics) if settings.discovery else None
    if discovery is not None:
        tasks.add(asyncio.create_task(discovery.run(), name="worker-discovery"))

    async def ready() -> None:
        await bus.subscribed.wait()
        if discovery is not None:
            # Serving before the first read would answer the first requests `timeout`: no worker.
            await discovery.ready.wait()

    try:
        await asyncio.wait_for(ready(), SUBSCRIBE_WAIT)
    except asyncio.TimeoutError:
        logger.error("gateway %s: no Redis subscription or worker registry after %.0fs; serving anyway",
                     gateway_id, SUBSCRIBE_WAIT)
    logger.info("gateway %s (pid %d) ready; worker topics %s", gateway_id, os.getpid(),
                "from the registry" if discovery is not None else ",".join(settings.worker_topics))
    # A stop that came while the process was importing is handled now (loop_signals.py).
    handle_noted_signals(asyncio.get_running_loop())
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        # After the writer stopped, so that it cannot write this process's id back.
        await presence.withdraw()
        await presence.close()
        await bus.close()
        if slot is not None:
            slot.release()


async def close_connections(app: web.Application) -> None:
    """On shutdown, tell every client we are going away (1001) before the handlers are cancelled.

    Each close is bounded by the connection's close timeout, so a client that does not read
    cannot hold the shutdown up.
    """
    connections = list(app[GATEWAY_KEY].registry)
    logger.info("shutting down: closing %d connections", len(connections))
    for conn in connections:
        conn.close(CLOSE_GOING_AWAY, "Server shutting down")
    if connections:
        await asyncio.gather(*(conn.stop() for conn in connections))


# What the resync frame after a bus gap says (for people; clients act on the action).
BUS_GAP_REASON = "The gateway lost its message bus for a moment: messages may have been missed"


def resync_after_bus_gap(registry: ConnectionRegistry) -> int:
    """After the reply subscription came back and presence was written again (presence.py's
    `on_registered_again`): tell every authenticated connection to `sync`.

    Messages for them published while this process was not subscribed are lost here (pub/sub
    keeps nothing). The `resync` frame turns that silent loss into the documented recovery: the
    client `sync`s from the newest message it has, on the connection it holds, after a random
    pause of its own so that the catch-ups spread out. Closing instead would make every client
    re-handshake and authenticate at once against a Redis that just came back. Requests in
    flight during the gap keep their deadlines and get their `timeout` reply; clients retry
    them with the same uuid. Connections that never authenticated get nothing but their own
    replies, so they missed nothing. The frame is encoded once; one pass over this process's
    connections, on a rare event (like the shutdown's).
    """
    frame = protocol.encode_frame(protocol.resync_notice(BUS_GAP_REASON))
    told = 0
    for conn in registry:
        if conn.user_pk is not None:
            conn.send(frame)
            told += 1
    logger.warning("bus and presence back after a gap: sent resync to %d authenticated connections", told)
    return told


def create_app(settings: GatewaySettings | None = None) -> web.Application:
    app = web.Application()
    app[SETTINGS_KEY] = settings or GatewaySettings.from_env()
    app.cleanup_ctx.append(gateway_context)
    app.on_shutdown.append(close_connections)
    app.router.add_get("/ws", views.websocket)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/metrics", views.metrics)
    return app


def _settings_with_logging() -> GatewaySettings:
    settings = GatewaySettings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    return settings


app = create_app(_settings_with_logging())
