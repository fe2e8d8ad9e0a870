"""The gateway's per-process state, stored on the application under one AppKey."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from .auth_deadline import AuthDeadlines
from .bus import Bus
from .clients import ConnectionsPerAddress
from .heartbeat import Heartbeat
from .metrics import GatewayMetrics
from .presence import PresenceWriter
from .registry import ConnectionRegistry
from .requests import PendingRequests
from .router import ReplyRouter
from .settings import GatewaySettings


@dataclass
class Gateway:
    gateway_id: str
    settings: GatewaySettings
    registry: ConnectionRegistry
    pending: PendingRequests
    router: ReplyRouter
    bus: Bus
    presence: PresenceWriter
    metrics: GatewayMetrics
    # Closes the connections that do not authenticate within AUTH_TIMEOUT.
    auth_deadlines: AuthDeadlines
    # Pings idle connections (None with WS_HEARTBEAT=0).
    heartbeat: Heartbeat | None = None
    # Open connections by client address (MAX_CONNECTIONS_PER_IP; counts nothing without a limit).
    per_address: ConnectionsPerAddress = field(default_factory=lambda: ConnectionsPerAddress(0))


SETTINGS_KEY = web.AppKey("settings", GatewaySettings)
GATEWAY_KEY = web.AppKey("gateway", Gateway)
