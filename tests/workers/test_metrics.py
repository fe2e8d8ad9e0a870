"""`workers.metrics`: bounded labels, the same error codes as the gateway's, and the HTTP endpoint."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.stack import free_port
from websockets_gateway import protocol
from workers.actions import registry
from workers.metrics import WorkerMetrics, action_label, serve, status_label


def test_the_workers_error_codes_and_the_gateways_are_the_protocols():
    # The workers count a status by their catalogue's codes; the gateway by those and its own.
    assert registry.error_codes() | protocol.GATEWAY_ERROR_CODES == {
        "invalid_message_format", "invalid_action", "invalid_token", "authentication_required", "invalid_room_id",
        "empty_text", "text_too_long", "invalid_user", "forbidden", "rate_limited", "timeout", "server_error",
        "invalid_message_id", "message_deleted", "invalid_emoji", "cursor_expired"}


def test_action_labels_are_the_registrys_actions_or_unknown():
    names = {declared.name for declared in registry}
    assert {action_label(action) for action in names} == names
    for sent in ("ping", "explode", "", None, 42):
        assert action_label(sent) == "unknown"


def test_status_labels_are_bounded():
    assert status_label({"status": "success"}) == "success"
    assert status_label({"status": "error", "error_code": "invalid_room_id"}) == "invalid_room_id"
    assert status_label({"status": "error", "error_code": "anything else"}) == "other"
    assert status_label({}) == "other"


def test_answered_counts_times_and_counts_server_errors_as_errors():
    metrics = WorkerMetrics("worker_test")
    assert metrics.answered("new_message", {"status": "success"}, 0.004) == "success"
    assert metrics.answered("new_message", {"status": "error", "error_code": "server_error"}, 0.02) == "server_error"
    assert metrics.answered("made-up", {"status": "error", "error_code": "invalid_action"}, 0.001) == "invalid_action"
    metrics.error("malformed_request")
    value = metrics.registry.get_sample_value
    assert value("chat_worker_requests_total", {"action": "new_message", "status": "success"}) == 1
    assert value("chat_worker_requests_total", {"action": "new_message", "status": "server_error"}) == 1
    assert value("chat_worker_requests_total", {"action": "unknown", "status": "invalid_action"}) == 1
    assert value("chat_worker_request_duration_seconds_count", {"action": "new_message"}) == 2
    assert value("chat_worker_request_duration_seconds_bucket", {"action": "new_message", "le": "0.005"}) == 1
    assert value("chat_worker_errors_total", {"kind": "server_error"}) == 1
    assert value("chat_worker_errors_total", {"kind": "malformed_request"}) == 1
    with pytest.raises(AssertionError):
        metrics.error("made-up kind")


def test_serve_answers_prometheus_scrapes_until_shut_down():
    metrics = WorkerMetrics("worker_test")
    metrics.answered("sync", {"status": "success"}, 0.01)
    port = free_port()
    server = serve(metrics, port, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("chat_worker_requests_total", (("action", "sync"), ("status", "success")))] == 1
    assert samples[("chat_worker_redis_reconnects_total", ())] == 0
    # The process's own figures come with it: one worker, one port.
    assert ("process_resident_memory_bytes", ()) in samples
