"""Log lines: the text and JSON formats, and the context (conn_id, request_id) every request's lines carry."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from websockets_gateway import identity, logs
from websockets_gateway.settings import GatewaySettings, SettingsError

from .fakes import FakeWorker, run
from .test_views import authenticating, request, serving

ROOT = Path(__file__).resolve().parents[2]


def make_record(message: str = "request answered", *args, level: int = logging.INFO, exc_info=None,
                **extra) -> logging.LogRecord:
    record = logging.getLogger("websockets_gateway.router").makeRecord(
        "websockets_gateway.router", level, "router.py", 1, message, args, exc_info, extra=extra)
    return record


# JSON

def test_a_json_line_parses_and_has_the_fields_and_the_context():
    line = logs.JsonFormatter().format(make_record(
        "request answered in %d parts", 2, conn_id="gw-1-7", request_id="gw-1:42", action="new_message",
        status="success", duration_ms=3.25))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "websockets_gateway.router"
    assert entry["message"] == "request answered in 2 parts"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
    assert isinstance(entry["process"], int)
    assert (entry["conn_id"], entry["request_id"], entry["action"], entry["status"], entry["duration_ms"]) == (
        "gw-1-7", "gw-1:42", "new_message", "success", 3.25)


def test_a_json_line_holds_a_traceback_and_any_text_on_one_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(make_record("two\nlines, “quoted” \u2028", level=logging.ERROR,
                                                   exc_info=exc_info, request_id="gw-1:1"))
    assert len(line.splitlines()) == 1 and line.isascii()
    entry = json.loads(line)
    assert entry["message"] == "two\nlines, “quoted” \u2028"
    assert "RuntimeError: boom" in entry["exception"] and "Traceback" in entry["exception"]


def test_context_values_json_cannot_take_are_written_as_text():
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    entry = json.loads(logs.JsonFormatter().format(make_record(thing=Thing(), numbers=(1, 2))))
    assert entry["thing"] == "a thing" and entry["numbers"] == [1, 2]
    entry = json.loads(logs.JsonFormatter().format(make_record(odd={(1, 2): "tuple key"}, nan=float("nan"))))
    assert entry["odd"] == repr({(1, 2): "tuple key"}) and entry["nan"] == "nan"


def test_context_never_replaces_the_lines_own_fields():
    entry = json.loads(logs.JsonFormatter().format(make_record(level_name="x", logger_name="y", time_taken=1)))
    assert entry["level"] == "INFO" and entry["logger"] == "websockets_gateway.router"


# Text

def test_a_text_line_puts_conn_and_request_before_the_message_and_the_rest_after_it():
    line = logs.TextFormatter().format(make_record(
        "request answered", conn_id="gw-1-7", request_id="gw-1:42", action="new_message", status="success",
        duration_ms=3.25, note="two words", thing=object()))
    assert line.split(" ", 4)[2:4] == ["INFO", "websockets_gateway.router"]
    assert line.endswith(' conn=gw-1-7 request=gw-1:42 request answered action=new_message status=success '
                         'duration_ms=3.25 note="two words"')


def test_a_text_line_without_context_is_the_plain_format():
    record = make_record("subscribed to %s", "topic")
    line = logs.TextFormatter().format(record)
    assert line.endswith(f" INFO websockets_gateway.router {record.process} subscribed to topic")


def test_the_text_format_keeps_the_connection_first_as_log_watchers_expect():
    # The end-to-end tests (and people) find a connection's lines by `conn=ID message`.
    line = logs.TextFormatter().format(make_record("closed (code %s)", 1000, conn_id="gw-1-7"))
    assert line.endswith(" conn=gw-1-7 closed (code 1000)")


# Configuration

def log_in_a_fresh_gateway_process(**env: str) -> subprocess.CompletedProcess:
    """Import the gateway's app module (as a gunicorn worker does) in a fresh interpreter and log one line."""
    code = ("import logging, websockets_gateway.app; "
            "logging.getLogger('websockets_gateway.views').info('opened from %s', '127.0.0.1', "
            "extra={'conn_id': 'gw-1-1'}); "
            "logging.getLogger('websockets_gateway.views').debug('not at INFO')")
    clean = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)


def test_the_gateway_logs_json_lines_with_log_format_json():
    result = log_in_a_fresh_gateway_process(LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"], entry["conn_id"]) == (
        "INFO", "websockets_gateway.views", "opened from 127.0.0.1", "gw-1-1")


def test_the_gateway_logs_text_by_default_at_log_level():
    result = log_in_a_fresh_gateway_process()
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert re.fullmatch(r"\S+ \S+ INFO websockets_gateway\.views \d+ conn=gw-1-1 opened from 127\.0\.0\.1", line), line
    debug = log_in_a_fresh_gateway_process(LOG_LEVEL="DEBUG")
    assert debug.stderr.splitlines()[-1].endswith(" not at INFO")


def test_a_bad_log_format_stops_the_gateway_at_start():
    result = log_in_a_fresh_gateway_process(LOG_FORMAT="yaml")
    assert result.returncode != 0 and "LOG_FORMAT" in result.stderr


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="yaml"):
        logs.formatter("yaml")


def test_log_settings_come_from_the_environment():
    defaults = GatewaySettings.from_env({})
    assert (defaults.log_level, defaults.log_format) == ("INFO", "text")
    chosen = GatewaySettings.from_env({"LOG_LEVEL": "debug", "LOG_FORMAT": "JSON"})
    assert (chosen.log_level, chosen.log_format) == ("DEBUG", "json")
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        GatewaySettings.from_env({"LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="LOG_LEVEL"):
        GatewaySettings.from_env({"LOG_LEVEL": "chatty"})


# What the gateway logs about a request

def test_a_requests_lines_carry_its_connection_and_request_id_and_no_secret(redis_server, caplog):
    token, text = "tok-3f9a1c-secret", "a private message text"

    async def scenario():
        async with serving() as (client, app):
            async with FakeWorker(redis_server, answer=authenticating({token: 1})) as worker:
                ws = await client.ws_connect("/ws")
                assert (await request(ws, {"uuid": "a1", "action": "authenticate", "token": token}))["status"] \
                    == "success"
                assert (await request(ws, {"uuid": "m1", "action": "new_message", "room": "r", "text": text}))[
                    "status"] == "success"
                await ws.close()
                return worker.requests

    with caplog.at_level(logging.DEBUG):
        bus_requests = run(scenario())
    answered = [r for r in caplog.records if r.getMessage() == "request answered"]
    assert [(r.levelno, r.action, r.status) for r in answered] == [
        (logging.INFO, "authenticate", "success"), (logging.INFO, "new_message", "success")]
    # The ids the workers got on the bus: a worker logs the same one.
    assert [r.request_id for r in answered] == [bus_request["request_id"] for bus_request in bus_requests]
    conn_id = answered[0].conn_id
    assert all(r.conn_id == conn_id for r in answered) and conn_id.startswith(identity.default_base() + "-")
    assert all(isinstance(r.duration_ms, float) and r.duration_ms >= 0 for r in answered)
    published = [r for r in caplog.records if r.getMessage() == "request published"]
    assert [(r.levelno, r.request_id) for r in published] == [(logging.DEBUG, r.request_id) for r in answered]
    [opened] = [r for r in caplog.records if r.getMessage().startswith("opened from")]
    assert opened.conn_id == conn_id
    # Neither the token nor the text, in any line, at any level, in either format.
    for record in caplog.records:
        for formatter in (logs.TextFormatter(), logs.JsonFormatter()):
            line = formatter.format(record)
            assert token not in line and text not in line
