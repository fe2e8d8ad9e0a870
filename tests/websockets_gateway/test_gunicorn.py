"""The gateway under gunicorn with either of aiohttp's worker classes: the documented one
(`aiohttp.GunicornWebWorker`, asyncio's own loop) and the uvloop one that scripts/stack.py and
docker-compose.yml use where uvloop is installed. The app must never depend on uvloop.

Real processes (an embedded Redis and a gunicorn gateway of one process); no worker is needed:
the gateway answers `ping` itself, and a request it cannot hand to any worker gets `timeout`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from scripts.stack import PLAIN_GATEWAY_WORKER, UVLOOP_GATEWAY_WORKER, GATEWAY_WORKER_CLASS, Stack, wait_for

pytestmark = pytest.mark.e2e

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def _loads_uvloop(pid: int) -> bool:
    """Whether uvloop's extension module is mapped into process `pid` (Linux's /proc)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "/uvloop/" in maps


async def _ping_and_unanswerable_request(url: str) -> tuple[dict, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"uuid": "p1", "action": "ping"}))
            ping = json.loads((await ws.receive(timeout=5)).data)
            await ws.send_str(json.dumps({"uuid": "a1", "action": "authenticate", "token": "t"}))
            refused = json.loads((await ws.receive(timeout=5)).data)
    return ping, refused


def test_stack_uses_the_uvloop_worker_where_uvloop_is_installed():
    assert GATEWAY_WORKER_CLASS == (UVLOOP_GATEWAY_WORKER if HAS_UVLOOP else PLAIN_GATEWAY_WORKER)


# aiohttp's two gunicorn workers, the uvloop one where uvloop is installed.
WORKER_CLASSES = [
    PLAIN_GATEWAY_WORKER,
    pytest.param(UVLOOP_GATEWAY_WORKER, marks=pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop not installed")),
]
# A bound on the wait for the first worker to stop: one that never does fails, it never blocks.
STOP_WAIT = 30.0


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    """An embedded Redis to start a gateway on; stopped afterwards, and the gateway's log must hold
    no traceback."""
    stack = Stack.create(log_dir=tmp_path, ALLOWED_ORIGINS="*", LOG_LEVEL="INFO",
                         # A topic no worker listens on: the gateway answers `timeout` at once.
                         WORKER_PROCESS_TOPICS="gunicorn_test_nobody", REQUEST_TIMEOUT="5")
    stack.env.pop("REDIS_URL", None)
    try:
        stack.start_redis()
        yield stack
    finally:
        stack.stop()
    assert "Traceback" not in stack.log("gateway")


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_the_gateway_serves_under_either_worker_class(stack, worker_class):
    proc, port = stack.start_gateway(processes=1, worker_class=worker_class)
    ping, refused = asyncio.run(_ping_and_unanswerable_request(f"http://127.0.0.1:{port}/ws"))
    assert (ping["uuid"], ping["status"], ping["connections"]) == ("p1", "success", 1)
    assert (refused["uuid"], refused["error_code"]) == ("a1", "timeout")
    if sys.platform == "linux":
        [worker] = psutil.Process(proc.pid).children()
        assert _loads_uvloop(worker.pid) == (worker_class == UVLOOP_GATEWAY_WORKER)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_stop_that_comes_while_a_worker_starts_stops_it_cleanly(stack, tmp_path, worker_class):
    # On uvloop the SIGTERM was only noted: the process served on until gunicorn's graceful
    # timeout killed it (websockets_gateway/loop_signals.py).
    marker = tmp_path / "signalled"
    proc, port = stack.start_gateway(processes=1, worker_class=worker_class,
                                     extra_env={"SIGTERM_AT_BOOT_MARKER": str(marker)},
                                     extra_args=["-c", str(Path(__file__).with_name("sigterm_at_boot.py"))])
    first = int(marker.read_text())
    wait_for(lambda: f"Worker exiting (pid: {first})" in stack.log("gateway"),
             f"the stop of the worker signalled while starting ({first})", STOP_WAIT)
    # Its clean-up ran (it withdrew its presence), and gunicorn's next worker serves.
    log = stack.log("gateway")
    assert re.search(rf"websockets_gateway\.presence {first} presence \S+: withdrawn", log), log
    ping, _ = asyncio.run(_ping_and_unanswerable_request(f"http://127.0.0.1:{port}/ws"))
    assert ping["status"] == "success"
    [worker] = psutil.Process(proc.pid).children()
    assert worker.pid != first
