"""Metrics and logs of the real processes: a gateway (one gunicorn process, so that every scrape
reaches the process that carried the traffic) and a worker with `--metrics-port`, both with
LOG_FORMAT=json, started for this module alone. Real frames go through them; then /metrics of
each must have moved by exactly what was sent, and one request must be found by its request_id
in the gateway's log and in the worker's, with no token and no message text in either.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import urllib.request
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.stack import free_port
from tests.e2e.conftest import connect, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Bounds of waits on things only a scrape can tell (the gateway's handler cleaned up after a close).
WAIT = 10.0
POLL_INTERVAL = 0.05

Series = tuple[str, frozenset]


def scrape(url: str) -> dict[Series, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def delta(before: dict[Series, float], after: dict[Series, float], name: str) -> dict[frozenset, float]:
    """How much each series of `name` moved, without the labels every series of a process has."""
    moved = {}
    for (series_name, labels), value in after.items():
        if series_name == name:
            change = value - before.get((series_name, labels), 0.0)
            if change:
                moved[frozenset((k, v) for k, v in labels if k not in ("gateway_id",))] = change
    return moved


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


def json_lines(log: str) -> list[dict[str, Any]]:
    """Every line of a log as JSON; gunicorn's own lines (`[time] [pid] [LEVEL] …`) are skipped."""
    entries = []
    for line in log.splitlines():
        if not line.strip() or line.startswith("["):
            continue
        entries.append(json.loads(line))  # any other line that is not JSON fails the test here
    return entries


@dataclass
class Traffic:
    gateway_id: str
    gateway_before: dict[Series, float]
    gateway_after: dict[Series, float]
    worker_before: dict[Series, float]
    worker_after: dict[Series, float]
    gateway_log: str
    worker_log: str
    secrets: list[str]
    message_uuid: str


@pytest.fixture(scope="module")
def traffic(e2e) -> Traffic:
    run_id = secrets.token_hex(3)
    topic = f"{e2e.tag}_metrics_{run_id}"
    worker_name, gateway_name = f"worker-metrics-{run_id}", f"gateway-metrics-{run_id}"
    worker_port = free_port()
    worker = e2e.stack.start_worker(topic, name=worker_name, extra_env={"LOG_FORMAT": "json"},
                                    extra_args=["--metrics-port", str(worker_port), "--metrics-addr", "127.0.0.1"])
    gateway, port = e2e.stack.start_gateway(processes=1, name=gateway_name,
                                            extra_env={"WORKER_PROCESS_TOPICS": topic, "LOG_FORMAT": "json"})
    gateway_metrics = f"http://127.0.0.1:{port}/metrics"
    worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            gateway_id = json.load(response)["gateway_id"]
        data = e2e.fixtures(users=2, rooms=1, room_size=2)
        user, room = data["users"][0], data["rooms"][0]
        bad_token = secrets.token_hex(20)  # shaped like a real one
        text = f"a private message {secrets.token_hex(8)}"
        message_uuid = uuidlib.uuid4().hex
        gateway_before, worker_before = scrape(gateway_metrics), scrape(worker_metrics)

        async def scenario(session):
            client = await connect(session, e2e.ws_url(port))
            assert (await client.request("authenticate", token=bad_token))["error_code"] == "invalid_token"
            await client.authenticate(user)
            await client.ok("new_message", uuid=message_uuid, room=room["id"], text=text)
            await client.send({"action": "list_rooms"})  # no uuid
            no_uuid = await client.expect(lambda f: f.get("action") == "list_rooms")
            assert no_uuid["error_code"] == "invalid_message_format"
            assert (await client.request("explode"))["error_code"] == "invalid_action"
            rude = await connect(session, e2e.ws_url(port))
            await rude.ws.send_str("not json")
            assert await rude.expect_close() == 1003
            await client.close()
            # The gateway's handler forgets a connection just after its close: wait for both.
            deadline = time.monotonic() + WAIT
            while scrape(gateway_metrics)[("chat_gateway_connections", labels(gateway_id=gateway_id))] != 0:
                assert time.monotonic() < deadline, "the gateway still counts open connections"
                await asyncio.sleep(POLL_INTERVAL)

        run(scenario)
        gateway_after, worker_after = scrape(gateway_metrics), scrape(worker_metrics)
    finally:
        # Stopped before their logs are read, so that every line is written.
        e2e.stack.stop_process(gateway)
        e2e.stack.stop_process(worker)
    return Traffic(gateway_id, gateway_before, gateway_after, worker_before, worker_after,
                   e2e.stack.log(gateway_name), e2e.stack.log(worker_name),
                   [user["token"], bad_token, text], message_uuid)


def test_the_gateway_metrics_moved_by_exactly_the_traffic(traffic):
    before, after = traffic.gateway_before, traffic.gateway_after
    assert after[("chat_gateway_info", labels(gateway_id=traffic.gateway_id, pid=next(
        dict(series)["pid"] for name, series in after if name == "chat_gateway_info")))] == 1
    # Every series is this process's: the one that answered /healthz.
    assert {dict(series).get("gateway_id") for _, series in after} == {traffic.gateway_id}
    # Five frames on the first connection, one (not JSON) on the second.
    assert delta(before, after, "chat_gateway_frames_received_total") == {labels(): 6}
    # A reply to each of the five; nothing to the second, which was closed.
    assert delta(before, after, "chat_gateway_frames_sent_total") == {labels(): 5}
    assert delta(before, after, "chat_gateway_requests_total") == {
        labels(action="authenticate", status="invalid_token"): 1,
        labels(action="authenticate", status="success"): 1,
        labels(action="new_message", status="success"): 1,
        labels(action="list_rooms", status="invalid_message_format"): 1,
        labels(action="unknown", status="invalid_action"): 1,
    }
    # The unknown action went to the worker (the gateway knows no domain action): a round trip too.
    assert delta(before, after, "chat_gateway_request_duration_seconds_count") == {
        labels(action="authenticate"): 2, labels(action="new_message"): 1, labels(action="unknown"): 1}
    assert delta(before, after, "chat_gateway_closes_total") == {labels(code="1003"): 1}
    for name in ("chat_gateway_request_timeouts_total", "chat_gateway_slow_client_disconnects_total",
                 "chat_gateway_redis_reconnects_total", "chat_gateway_bus_errors_total"):
        assert delta(before, after, name) == {}, name
    assert after[("chat_gateway_connections", labels(gateway_id=traffic.gateway_id))] == 0
    assert after[("chat_gateway_requests_in_flight", labels(gateway_id=traffic.gateway_id))] == 0


def test_the_worker_metrics_moved_by_exactly_the_requests_it_answered(traffic):
    before, after = traffic.worker_before, traffic.worker_after
    assert delta(before, after, "chat_worker_requests_total") == {
        labels(action="authenticate", status="invalid_token"): 1,
        labels(action="authenticate", status="success"): 1,
        labels(action="new_message", status="success"): 1,
        labels(action="unknown", status="invalid_action"): 1,
    }
    assert delta(before, after, "chat_worker_request_duration_seconds_count") == {
        labels(action="authenticate"): 2, labels(action="new_message"): 1, labels(action="unknown"): 1}
    assert delta(before, after, "chat_worker_errors_total") == {}
    assert delta(before, after, "chat_worker_redis_reconnects_total") == {}


def test_a_request_is_followed_by_its_request_id_from_gateway_to_worker(traffic):
    gateway_entries, worker_entries = json_lines(traffic.gateway_log), json_lines(traffic.worker_log)
    assert gateway_entries and worker_entries
    for entry in gateway_entries + worker_entries:
        assert {"time", "level", "logger", "message", "process"} <= entry.keys(), entry
    answered = [e for e in gateway_entries if e["message"] == "request answered"]
    handled = [e for e in worker_entries if e["message"] == "request handled"]
    assert [(e["action"], e["status"]) for e in answered] == [
        ("authenticate", "invalid_token"), ("authenticate", "success"), ("new_message", "success"),
        ("unknown", "invalid_action")]
    # The same four requests, by the same ids, on both sides.
    assert [e["request_id"] for e in handled] == [e["request_id"] for e in answered]
    # `<gateway id>.<token of the process's start>:<n>`: a process that takes the id later never
    # mistakes these for its own.
    assert all(re.fullmatch(rf"{re.escape(traffic.gateway_id)}\.[0-9a-f]{{8}}:\d+", e["request_id"]) for e in answered)
    # One connection carried them, and its id is on every line of the gateway's about them.
    [conn_id] = {e["conn_id"] for e in answered}
    [new_message] = [e for e in answered if e["action"] == "new_message"]
    [worker_side] = [e for e in handled if e["request_id"] == new_message["request_id"]]
    assert (worker_side["action"], worker_side["status"], worker_side["level"]) == ("new_message", "success", "INFO")
    assert new_message["level"] == "INFO" and new_message["duration_ms"] >= worker_side["duration_ms"] > 0
    opened = [e for e in gateway_entries if e["message"].startswith("opened from")]
    assert conn_id in {e["conn_id"] for e in opened}
    assert any(e["message"].startswith("closed (code") and e["conn_id"] == conn_id for e in gateway_entries)


def test_no_token_and_no_message_text_in_either_log(traffic):
    assert traffic.message_uuid  # the message was sent (its reply was a success)
    for name, log in (("gateway", traffic.gateway_log), ("worker", traffic.worker_log)):
        for secret in traffic.secrets:
            assert secret not in log, f"{secret[:6]}… appears in the {name} log"
