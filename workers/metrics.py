"""A worker's Prometheus metrics, served on `--metrics-port` by prometheus_client's own HTTP server.

One worker is one process with a port of its own, so its registry needs no process label;
`chat_worker_info` says which topic it serves. Label values are bounded: actions are the
action registry's or `unknown`, statuses `success`, the error codes of the catalogue or `other`.
"""

from __future__ import annotations

import os
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics, start_http_server,
)

from .actions import registry

# No `<counter>_created` series beside every counter (a process-wide switch of the library): they
# would double the series and tell nothing that a rate() needs.
disable_created_metrics()

# Seconds from a request taken off the topic to its reply ready to publish.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# What went wrong, for chat_worker_errors_total: a handler raised (the requester got
# `server_error`); the request could not be answered at all (the requester gets its timeout);
# a bus message was no request (not JSON, or no reply_to/request_id) and was dropped.
ERROR_KINDS = frozenset({"server_error", "unanswered", "malformed_request"})


def action_label(action: Any) -> str:
    return action if action in registry else "unknown"


def status_label(response: dict[str, Any]) -> str:
    if response.get("status") == "success":
        return "success"
    code = response.get("error_code")
    if response.get("status") == "error" and isinstance(code, str) and code in registry.error_codes():
        return code
    return "other"


class WorkerMetrics:
    def __init__(self, topic: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        info = Gauge("chat_worker_info", "This worker process: the topic it serves and its pid", ["topic", "pid"],
                     registry=self.registry)
        info.labels(topic, str(os.getpid())).set(1)
        self._requests = Counter("chat_worker_requests", "Requests answered, by action and status "
                                 "(success or error code)", ["action", "status"], registry=self.registry)
        self._duration = Histogram("chat_worker_request_duration_seconds", "Time to answer a request, by action",
                                   ["action"], buckets=DURATION_BUCKETS, registry=self.registry)
        self._errors = Counter("chat_worker_errors", "Requests that failed, by kind (server_error, unanswered, "
                               "malformed_request)", ["kind"], registry=self.registry)
        self.redis_reconnects = Counter("chat_worker_redis_reconnects",
                                        "Times the worker lost Redis and subscribed again", registry=self.registry)
        self.routing_fallbacks = Counter(
            "chat_worker_routing_fallbacks",
            "Replies for several users sent to WORKER_RESPONSE_TOPIC (every gateway) because presence "
            "could not be read", registry=self.registry)
        # CPU, memory and open files of this process (process_*): one process, so the series are its own.
        ProcessCollector(registry=self.registry)

    def answered(self, action: Any, response: dict[str, Any], seconds: float) -> str:
        """Count and time one answered request; returns its status label."""
        status = status_label(response)
        label = action_label(action)
        self._requests.labels(label, status).inc()
        self._duration.labels(label).observe(seconds)
        if status == "server_error":
            self._errors.labels("server_error").inc()
        return status

    def error(self, kind: str) -> None:
        assert kind in ERROR_KINDS, kind
        self._errors.labels(kind).inc()


def serve(metrics: WorkerMetrics, port: int, addr: str = "0.0.0.0") -> WSGIServer:
    """Serve `metrics` over HTTP from a daemon thread; `shutdown()` the server returned to stop it."""
    server, _thread = start_http_server(port, addr, registry=metrics.registry)
    return server
