"""The gateway process's Prometheus metrics, served at `GET /metrics`.

Each gunicorn process has its own registry and answers for itself alone (as `/healthz` does),
so every series carries the process's `gateway_id`: two processes behind one port give two
series, never one counter that jumps between them. Every update is O(1), and every label's
values are bounded: actions are the workers' catalogue's (catalogue.py) or `unknown`, statuses
`success`, the catalogue's error codes or `other`; nothing is labelled per connection or per user.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics,
)
from prometheus_client.metrics_core import Metric

from .catalogue import Catalogue
from .protocol import GATEWAY_ERROR_CODES

# No `<counter>_created` series beside every counter (a process-wide switch of the library): they
# would double the series and tell nothing that a rate() needs.
disable_created_metrics()

# Seconds from the publish to the routed reply: from a local round trip (a millisecond) up
# to the default REQUEST_TIMEOUT, past which a request times out instead.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Why a request could not go out, or a reply could not come back, on the bus.
BUS_ERROR_KINDS = frozenset({"topic_without_worker", "no_worker", "redis_unavailable",
                             "malformed_reply", "routing_failed", "subscriber_failed"})


class ProcessMetrics:
    """prometheus_client's process metrics (`process_*`: CPU, resident memory, open file
    descriptors, as the workers serve them), each sample labelled with the gateway process's id:
    the processes of a gateway answer on one port, so without it one series would jump between them."""

    def __init__(self, gateway_id: str, registry: CollectorRegistry) -> None:
        self.gateway_id = gateway_id
        self._process = ProcessCollector(registry=None)
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for family in self._process.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                labelled.add_sample(sample.name, {**sample.labels, "gateway_id": self.gateway_id},
                                    sample.value, sample.timestamp, sample.exemplar)
            yield labelled


class GatewayMetrics:
    """The metrics of one gateway process, in a registry of their own."""

    def __init__(self, gateway_id: str, registry: CollectorRegistry | None = None) -> None:
        self.gateway_id = gateway_id
        self.registry = registry if registry is not None else CollectorRegistry()
        # The names labels may carry; the app keeps it fresh from Redis.
        self.catalogue = Catalogue()
        self.action_label = self.catalogue.action_label
        labels = ["gateway_id"]

        def one(kind: type, name: str, documentation: str) -> Any:
            return kind(name, documentation, labels, registry=self.registry).labels(gateway_id)

        info = Gauge("chat_gateway_info", "This gateway process: its id (as /healthz gives it) and pid",
                     labels + ["pid"], registry=self.registry)
        info.labels(gateway_id, str(os.getpid())).set(1)
        self.connections = one(Gauge, "chat_gateway_connections", "Open WebSocket connections")
        self.in_flight = one(Gauge, "chat_gateway_requests_in_flight", "Requests waiting for a worker's reply")
        self.frames_received = one(Counter, "chat_gateway_frames_received",
                                   "WebSocket data frames received from clients (text and binary)")
        self.frames_sent = one(Counter, "chat_gateway_frames_sent", "Frames written to clients")
        self.envelopes_received = one(
            Counter, "chat_gateway_bus_envelopes_received",
            "Reply envelopes read from the bus, before routing knows whether this process holds a recipient")
        self.publish_round_trips = one(Counter, "chat_gateway_bus_publish_round_trips",
                                       "Round trips to Redis that published requests (one pipeline each)")
        self.request_timeouts = one(Counter, "chat_gateway_request_timeouts",
                                    "Requests no worker answered within REQUEST_TIMEOUT")
        self.slow_client_disconnects = one(
            Counter, "chat_gateway_slow_client_disconnects",
            "Clients disconnected (4008) because SEND_QUEUE_SIZE frames were waiting for them")
        self.redis_reconnects = one(Counter, "chat_gateway_redis_reconnects",
                                    "Times the reply subscription to Redis was lost and made again")
        self.presence_errors = one(Counter, "chat_gateway_presence_errors",
                                   "Failed writes of this process's presence to Redis")
        self.presence_hold_timeouts = one(
            Counter, "chat_gateway_presence_hold_timeouts",
            "Authenticate replies sent after PRESENCE_HOLD_MAX without their user's presence written")
        self.bus_envelopes = one(Counter, "chat_gateway_bus_envelopes",
                                 "Reply envelopes received from the bus, on any of this process's topics")
        self._requests = Counter(
            "chat_gateway_requests", "Client frames answered, by action and status (success or error code)",
            labels + ["action", "status"], registry=self.registry)
        self._latency = Histogram(
            "chat_gateway_request_duration_seconds",
            "From the request's publish to its worker reply routed, by action",
            labels + ["action"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._closes = Counter("chat_gateway_closes", "Connections the gateway closed, by close code",
                               labels + ["code"], registry=self.registry)
        self._bus_errors = Counter("chat_gateway_bus_errors", "Requests or replies the bus could not carry, by kind",
                                   labels + ["kind"], registry=self.registry)
        ProcessMetrics(gateway_id, self.registry)

    def watch(self, connections: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Read the two gauges from these callables at each scrape: nothing to update on the hot path."""
        self.connections.set_function(connections)
        self.in_flight.set_function(in_flight)

    def answered(self, action: Any, reply: dict[str, Any]) -> str:
        """Count a request answered with `reply`; returns its status label."""
        status = self.catalogue.status_label(reply)
        self._requests.labels(self.gateway_id, self.action_label(action), status).inc()
        return status

    def failed(self, action: Any, error_code: str) -> None:
        """Count a request answered with one of the gateway's own error codes (a timeout)."""
        assert error_code in GATEWAY_ERROR_CODES, error_code
        self._requests.labels(self.gateway_id, self.action_label(action), error_code).inc()

    def round_trip(self, action: Any, seconds: float) -> None:
        self._latency.labels(self.gateway_id, self.action_label(action)).observe(seconds)

    def closed(self, code: int) -> None:
        # Only the gateway's own close codes come here (constants in connection.py): bounded.
        self._closes.labels(self.gateway_id, str(code)).inc()

    def bus_error(self, kind: str) -> None:
        assert kind in BUS_ERROR_KINDS, kind
        self._bus_errors.labels(self.gateway_id, kind).inc()


_detached: GatewayMetrics | None = None


def detached() -> GatewayMetrics:
    """Metrics for a part built on its own, without the app (unit tests): counted, served nowhere."""
    global _detached
    if _detached is None:
        _detached = GatewayMetrics("detached")
    return _detached
