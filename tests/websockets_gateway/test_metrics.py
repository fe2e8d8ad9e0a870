"""The gateway's Prometheus metrics: what each event counts, scraped from `GET /metrics` of the real app.

Each app has a registry of its own, so every count here starts at zero.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fakeredis
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from websockets_gateway.bus import Bus, BusUnavailable, NoWorkerAvailable
from websockets_gateway.connection import CLOSE_SLOW_CONSUMER, CLOSE_UNSUPPORTED_DATA
from websockets_gateway.catalogue import Catalogue
from websockets_gateway.metrics import GatewayMetrics
from websockets_gateway.protocol import GATEWAY_ERROR_CODES
from websockets_gateway.registry import ConnectionRegistry
from websockets_gateway.requests import PendingRequests
from websockets_gateway.router import ReplyRouter
from websockets_gateway.state import GATEWAY_KEY

from .fakes import CATALOGUE, PROTOCOL_ACTIONS, PROTOCOL_ERROR_CODES, WAIT, FakeWebSocket, FakeWorker, RecordingConnection, make_connection, run
from .test_views import authenticating, receive_close, receive_json, request, serving, wait_until

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` (besides gateway_id); 0 when the series does not exist yet."""
    found = [v for (sample_name, sample_labels), v in samples.items()
             if sample_name == name and {k: v for k, v in sample_labels if k != "gateway_id"} == labels]
    assert len(found) <= 1
    return found[0] if found else 0.0


async def scrape(client) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    return parse(await response.text())


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"gateway_id": metrics.gateway_id, **labels}) or 0.0


# Labels

def published_catalogue() -> Catalogue:
    catalogue = Catalogue()
    assert catalogue.load(CATALOGUE)
    return catalogue


def test_action_labels_are_the_catalogues_actions_the_gateways_own_or_unknown():
    catalogue = published_catalogue()
    assert {catalogue.action_label(action) for action in PROTOCOL_ACTIONS} == set(PROTOCOL_ACTIONS)
    assert catalogue.action_label("ping") == "ping"
    for client_sent in ("explode", "", None, 5, ["ping"], "ping " * 100):
        assert catalogue.action_label(client_sent) == "unknown"
    # Before any worker published its catalogue: the gateway's own names only.
    assert Catalogue().action_label("new_message") == "unknown"
    assert Catalogue().action_label("authenticate") == "authenticate"


def test_status_labels_are_success_the_catalogues_error_codes_the_gateways_own_or_other():
    catalogue = published_catalogue()
    assert catalogue.status_label({"status": "success"}) == "success"
    for code in PROTOCOL_ERROR_CODES + tuple(GATEWAY_ERROR_CODES):
        assert catalogue.status_label({"status": "error", "error_code": code}) == code
    assert catalogue.status_label({"status": "error", "error_code": "made_up_by_someone"}) == "other"
    assert catalogue.status_label({"status": "error"}) == "other"
    assert catalogue.status_label({"status": "weird"}) == "other"
    assert catalogue.status_label({}) == "other"


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[]", b'{"actions": []}', b'{"actions": {}}',
                                 b'{"actions": {}, "error_codes": {}}'])
def test_a_catalogue_that_is_not_one_changes_nothing(raw):
    catalogue = published_catalogue()
    assert not catalogue.load(raw)
    assert catalogue.action_label("new_message") == "new_message"


def test_a_catalogue_is_bounded_whatever_it_holds():
    catalogue = Catalogue()
    assert catalogue.load(json.dumps({"actions": {f"a{n}": {} for n in range(1000)} | {"x" * 65: {}, "5": 5},
                                      "error_codes": [f"c{n}" for n in range(1000)] + [7, None]}))
    assert len(catalogue.actions) <= 256 + 2 and len(catalogue.error_codes) <= 256 + len(GATEWAY_ERROR_CODES)
    assert catalogue.action_label("x" * 65) == "unknown"


# The app, end to end in one process

def test_metrics_count_frames_requests_and_round_trips(redis_server):
    async def scenario():
        async with serving() as (client, app):
            async with FakeWorker(redis_server, answer=authenticating({"good": 1})):
                gateway_id = app[GATEWAY_KEY].gateway_id
                ws = await client.ws_connect("/ws")
                assert (await request(ws, {"uuid": "a0", "action": "authenticate", "token": "bad"}))["error_code"] \
                    == "invalid_token"
                assert (await request(ws, {"uuid": "a1", "action": "authenticate", "token": "good"}))["status"] \
                    == "success"
                assert (await request(ws, {"uuid": "m1", "action": "new_message", "room": "r", "text": "hi"}))[
                    "status"] == "success"
                assert (await request(ws, {"action": "list_rooms"}))["error_code"] == "invalid_message_format"
                assert (await request(ws, {"uuid": "x1", "action": "explode"}))["error_code"] == "invalid_action"
                assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"

                response = await client.get("/metrics")
                assert response.headers["Content-Type"].startswith("text/plain")
                samples = parse(await response.text())
                assert value(samples, "chat_gateway_info", pid=next(
                    dict(labels)["pid"] for name, labels in samples if name == "chat_gateway_info")) == 1
                assert {dict(labels)["gateway_id"] for _, labels in samples} == {gateway_id}
                assert value(samples, "chat_gateway_connections") == 1
                assert value(samples, "chat_gateway_requests_in_flight") == 0
                assert value(samples, "chat_gateway_frames_received_total") == 6
                assert value(samples, "chat_gateway_frames_sent_total") == 6
                requests = {(dict(labels)["action"], dict(labels)["status"]): v for (name, labels), v in samples.items()
                            if name == "chat_gateway_requests_total"}
                assert requests == {
                    ("authenticate", "invalid_token"): 1, ("authenticate", "success"): 1,
                    ("new_message", "success"): 1, ("list_rooms", "invalid_message_format"): 1,
                    ("unknown", "invalid_action"): 1, ("ping", "success"): 1,
                }
                # Only requests that went to a worker have a round trip; ping never leaves the gateway.
                assert value(samples, "chat_gateway_request_duration_seconds_count", action="authenticate") == 2
                assert value(samples, "chat_gateway_request_duration_seconds_count", action="new_message") == 1
                assert value(samples, "chat_gateway_request_duration_seconds_count", action="ping") == 0
                assert 0 < value(samples, "chat_gateway_request_duration_seconds_sum", action="new_message") < WAIT
                assert value(samples, "chat_gateway_request_timeouts_total") == 0
                assert value(samples, "chat_gateway_slow_client_disconnects_total") == 0

                await ws.close()
                await wait_until(lambda: len(app[GATEWAY_KEY].registry) == 0)
                assert value(await scrape(client), "chat_gateway_connections") == 0

    run(scenario())


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(redis_server):
    async def scenario():
        async with serving() as (client, app):
            response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.text()).rstrip().endswith("# EOF")

    run(scenario())


def test_metrics_include_the_processs_cpu_memory_and_open_files_with_its_gateway_id(redis_server):
    async def scenario():
        async with serving() as (client, app):
            samples = await scrape(client)
            gateway_id = app[GATEWAY_KEY].gateway_id
            for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"):
                found = {labels: v for (sample_name, labels), v in samples.items() if sample_name == name}
                assert list(found) == [frozenset({("gateway_id", gateway_id)})], (name, found)
                assert next(iter(found.values())) > 0 or name == "process_cpu_seconds_total"

    run(scenario())


def test_a_request_no_worker_answers_in_time_counts_as_a_timeout(redis_server):
    async def scenario():
        async with serving(request_timeout=0.2) as (client, app):
            async with FakeWorker(redis_server):  # silent
                ws = await client.ws_connect("/ws")
                reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "t"})
                assert reply["error_code"] == "timeout"
                samples = await scrape(client)
                assert value(samples, "chat_gateway_request_timeouts_total") == 1
                assert value(samples, "chat_gateway_requests_total", action="authenticate", status="timeout") == 1
                assert value(samples, "chat_gateway_request_duration_seconds_count", action="authenticate") == 0

    run(scenario())


def test_no_worker_on_any_topic_counts_as_a_timeout_and_a_bus_error(redis_server):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws")
            reply = await request(ws, {"uuid": "a1", "action": "authenticate", "token": "t"})
            assert reply["error_code"] == "timeout"
            samples = await scrape(client)
            assert value(samples, "chat_gateway_requests_total", action="authenticate", status="timeout") == 1
            assert value(samples, "chat_gateway_bus_errors_total", kind="topic_without_worker") == 1
            assert value(samples, "chat_gateway_bus_errors_total", kind="no_worker") == 1
            # Not a deadline that passed: the client was answered at once.
            assert value(samples, "chat_gateway_request_timeouts_total") == 0

    run(scenario())


def test_rate_limited_frames_are_counted(redis_server):
    async def scenario():
        async with serving(rate_limit=0.01, rate_burst=1) as (client, app):
            ws = await client.ws_connect("/ws")
            assert (await request(ws, {"uuid": "p1", "action": "ping"}))["status"] == "success"
            assert (await request(ws, {"uuid": "p2", "action": "ping"}))["error_code"] == "rate_limited"
            assert (await request(ws, {"uuid": "p3", "action": "explode"}))["error_code"] == "rate_limited"
            samples = await scrape(client)
            assert value(samples, "chat_gateway_requests_total", action="ping", status="success") == 1
            assert value(samples, "chat_gateway_requests_total", action="ping", status="rate_limited") == 1
            assert value(samples, "chat_gateway_requests_total", action="unknown", status="rate_limited") == 1

    run(scenario())


def test_a_frame_that_is_not_json_counts_a_frame_and_a_1003_close_but_no_request(redis_server):
    async def scenario():
        async with serving() as (client, app):
            ws = await client.ws_connect("/ws")
            await ws.send_str("not json")
            code, _ = await receive_close(ws)
            assert code == CLOSE_UNSUPPORTED_DATA
            samples = await scrape(client)
            assert value(samples, "chat_gateway_frames_received_total") == 1
            assert value(samples, "chat_gateway_closes_total", code=str(CLOSE_UNSUPPORTED_DATA)) == 1
            assert not [name for name, _ in samples if name == "chat_gateway_requests_total"]

    run(scenario())


def test_client_chosen_actions_make_one_unknown_series(redis_server):
    # A client picks its actions: none of them may become a series of its own.
    async def scenario():
        async with serving() as (client, app):
            async with FakeWorker(redis_server, answer=authenticating({"good": 1})):
                ws = await client.ws_connect("/ws")
                assert (await request(ws, {"uuid": "a", "action": "authenticate", "token": "good"}))["status"] \
                    == "success"
                for number in range(20):
                    await ws.send_str(json.dumps({"uuid": f"u{number}", "action": f"made-up-{number}"}))
                for _ in range(20):
                    assert (await receive_json(ws))["error_code"] == "invalid_action"
                samples = await scrape(client)
                series = [dict(labels) for name, labels in samples if name == "chat_gateway_requests_total"]
                assert sorted((s["action"], s["status"]) for s in series) == [
                    ("authenticate", "success"), ("unknown", "invalid_action")]
                assert value(samples, "chat_gateway_requests_total", action="unknown", status="invalid_action") == 20

    run(scenario())


# The parts, each with metrics of its own

def test_a_slow_client_disconnect_is_counted():
    async def scenario():
        metrics = GatewayMetrics("gw-test")
        ws = FakeWebSocket(send_gate=asyncio.Event())  # never reads
        conn = make_connection("c1", ws, send_queue_size=2, metrics=metrics)
        conn.start()
        for number in range(5):  # one in the writer's hands, two queued, then full
            conn.send(f"frame {number}")
            await asyncio.sleep(0)
        assert conn.closed
        await conn.stop()
        assert sample(metrics, "chat_gateway_slow_client_disconnects_total") == 1
        assert sample(metrics, "chat_gateway_closes_total", code=str(CLOSE_SLOW_CONSUMER)) == 1
        assert sample(metrics, "chat_gateway_frames_sent_total") == 0

    run(scenario())


def test_frames_sent_are_counted_when_written():
    async def scenario():
        metrics = GatewayMetrics("gw-test")
        ws = FakeWebSocket()
        conn = make_connection("c1", ws, metrics=metrics)
        conn.start()
        for number in range(3):
            conn.send(f"frame {number}")
        await ws.wait_until(lambda: len(ws.sent) == 3)
        await conn.stop()
        assert sample(metrics, "chat_gateway_frames_sent_total") == 3

    run(scenario())


def test_a_malformed_reply_envelope_is_counted_as_a_bus_error():
    async def scenario():
        metrics = GatewayMetrics("gw-test")
        registry = ConnectionRegistry()
        pending = PendingRequests("gw-test", 5.0, 4, on_timeout=lambda request: None, metrics=metrics)
        router = ReplyRouter(registry, pending, metrics)
        router.route(b"not json")
        router.route(json.dumps({"request_id": "gw-test:1", "response": "no"}))
        assert sample(metrics, "chat_gateway_bus_errors_total", kind="malformed_reply") == 2

    run(scenario())


def test_a_reply_to_a_request_of_this_process_is_counted_once_whoever_gets_it():
    async def scenario():
        metrics = GatewayMetrics("gw-test")
        metrics.catalogue.load(CATALOGUE)
        registry = ConnectionRegistry()
        pending = PendingRequests("gw-test", 5.0, 4, on_timeout=lambda request: None, metrics=metrics)
        router = ReplyRouter(registry, pending, metrics)
        conn = RecordingConnection("c1")
        registry.add(conn)
        registry.set_session(conn, {"user_pk": 1})
        request = pending.start(conn, {"uuid": "u1", "action": "new_message", "room": "r"})
        reply = {"uuid": "u1", "action": "new_message", "room": "r", "status": "success"}
        envelope = {"request_id": request.request_id, "send_to": [1, 2], "session_data": None, "response": reply}
        router.route(json.dumps(envelope))
        # The same reply again (a duplicate on the bus), and another gateway's broadcast: no request of ours.
        router.route(json.dumps(envelope))
        router.route(json.dumps({**envelope, "request_id": "gw-other:1"}))
        assert len(conn.received) == 3
        assert sample(metrics, "chat_gateway_requests_total", action="new_message", status="success") == 1
        assert sample(metrics, "chat_gateway_request_duration_seconds_count", action="new_message") == 1

    run(scenario())


@pytest.mark.parametrize("failure", ["no_worker", "redis"])
def test_publish_failures_are_counted_by_kind(failure):
    async def scenario():
        server = fakeredis.FakeServer()
        metrics = GatewayMetrics("gw-test")
        publisher = fakeredis.FakeAsyncRedis(server=server)
        if failure == "redis":
            async def refuse(*args: Any, **kwargs: Any) -> None:
                raise RedisConnectionError("Connection refused")

            publisher.execute_command = refuse
        bus = Bus("redis://unused", ("w1", "w2"), "resp", "gateway_reply:gw-test", on_reply=lambda data: None,
                  publish_timeout=1.0, publisher=publisher, subscriber=fakeredis.FakeAsyncRedis(server=server),
                  metrics=metrics)
        with pytest.raises(NoWorkerAvailable if failure == "no_worker" else BusUnavailable):
            await bus.publish_request({"uuid": "u"})
        if failure == "no_worker":
            assert sample(metrics, "chat_gateway_bus_errors_total", kind="topic_without_worker") == 2
            assert sample(metrics, "chat_gateway_bus_errors_total", kind="no_worker") == 1
        else:
            assert sample(metrics, "chat_gateway_bus_errors_total", kind="redis_unavailable") == 1
        await bus.close()

    run(scenario())


def test_every_metric_update_is_bounded_in_series():
    # Whatever a client sends or a worker answers, a label takes one of a fixed set of values.
    metrics = GatewayMetrics("gw-test")
    for number in range(100):
        metrics.answered(f"action-{number}", {"status": "error", "error_code": f"code-{number}"})
        metrics.round_trip(f"action-{number}", 0.01)
    samples = parse(generate_latest(metrics.registry).decode())
    assert {labels for name, labels in samples if name == "chat_gateway_requests_total"} == {
        frozenset({("gateway_id", "gw-test"), ("action", "unknown"), ("status", "other")})}
    assert {labels for name, labels in samples if name == "chat_gateway_request_duration_seconds_count"} == {
        frozenset({("gateway_id", "gw-test"), ("action", "unknown")})}
    # No `_created` series beside each counter: half the series, nothing a rate() needs.
    assert not [name for name, _ in samples if name.endswith("_created")]
