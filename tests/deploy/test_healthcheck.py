"""deploy/healthcheck.py, the containers' health checks: healthy parts pass, sick ones fail.

The web check runs against a real gunicorn serving the Django project with production security
settings (DEBUG off, ALLOWED_HOSTS naming only the public host, SSL redirect on), where a plain
GET of the page answers 400 or a redirect: the check must still see it healthy.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import subprocess
import sys
import threading
from typing import Iterator

import fakeredis
import pytest
import redis

from scripts.stack import ROOT, free_port, port_open, wait_for

spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)

# DEBUG off needs the collected, hashed static files (the image has them: collectstatic at
# build); here the plain storage stands in, everything else is project.settings.
SETTINGS_MODULE = """\
from project.settings import *  # noqa: F401,F403
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
"""


@pytest.mark.parametrize("allowed, host", [
    ("chat.example.com", "chat.example.com"),
    ("chat.example.com,localhost", "chat.example.com"),
    (" , .example.com", "example.com"),
    ("*", "localhost"),
    ("", "localhost"),
])
def test_the_web_check_sends_a_host_that_allowed_hosts_accepts(allowed, host):
    assert healthcheck.web_host(allowed) == host


@pytest.fixture(scope="module")
def production_web(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("web")
    (folder / "healthcheck_settings.py").write_text(SETTINGS_MODULE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECURE_SSL_REDIRECT")}
    env.update(DEBUG="0", SECRET_KEY="a-secret-for-this-test-only-0123456789-abcdefghijklmnopqrstuvwxyz",
               ALLOWED_HOSTS="chat.example.com", DJANGO_SETTINGS_MODULE="healthcheck_settings",
               PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]),
               DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--no-control-socket"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: port_open(port), "gunicorn web", 30, proc)
        yield f"http://127.0.0.1:{port}/login/", env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_web_with_production_settings_is_healthy(production_web):
    url, env = production_web
    assert healthcheck.main(["web", url], env) == 0


def test_what_a_naive_web_check_would_have_seen(production_web):
    """Why the check sends its own Host and X-Forwarded-Proto: without them Django refuses the
    host (400), and with the host alone it redirects to HTTPS (301)."""
    url, env = production_web
    assert healthcheck.get(url, {}) == 400
    assert healthcheck.get(url, {"Host": "chat.example.com"}) == 301
    assert healthcheck.main(["web", url], {**env, "ALLOWED_HOSTS": "other.example.com"}) == 1


class _Status(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def status_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status, exit_code", [(200, 0), (503, 1)])
def test_the_gateway_check_follows_healthz(status_server, status, exit_code, capsys):
    status_server.status = status
    url = f"http://127.0.0.1:{status_server.server_address[1]}/healthz"
    assert healthcheck.main(["gateway", url], {}) == exit_code
    if exit_code:
        assert "answered 503" in capsys.readouterr().err


def test_a_part_that_does_not_answer_is_unhealthy(capsys):
    port = free_port()
    assert healthcheck.main(["gateway", f"http://127.0.0.1:{port}/healthz"], {}) == 1
    assert "unhealthy: ConnectionRefusedError" in capsys.readouterr().err


def test_the_worker_check_wants_a_subscriber_on_its_topic(monkeypatch):
    server = fakeredis.FakeServer()
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kw: fakeredis.FakeRedis(server=server)))
    env = {"REDIS_URL": "redis://redis:6379/0"}
    assert healthcheck.main(["worker", "worker_process_1"], env) == 1
    subscriber = fakeredis.FakeRedis(server=server).pubsub()
    subscriber.subscribe("worker_process_1")
    assert healthcheck.main(["worker", "worker_process_1"], env) == 0
    assert healthcheck.main(["worker", "worker_process_2"], env) == 1


def test_the_worker_check_reads_the_topic_from_the_workers_topic_file(monkeypatch, tmp_path, capsys):
    server = fakeredis.FakeServer()
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kw: fakeredis.FakeRedis(server=server)))
    env = {"REDIS_URL": "redis://redis:6379/0"}
    path = tmp_path / "chat-worker-topic"
    assert healthcheck.main(["worker", f"@{path}"], env) == 1
    assert "has not started" in capsys.readouterr().err
    path.write_text("\n")
    assert healthcheck.main(["worker", f"@{path}"], env) == 1
    assert "names no topic" in capsys.readouterr().err
    path.write_text("chat.worker.c0ffee-1-ab12cd34\n")
    assert healthcheck.main(["worker", f"@{path}"], env) == 1
    assert "no subscriber on chat.worker.c0ffee-1-ab12cd34" in capsys.readouterr().err
    subscriber = fakeredis.FakeRedis(server=server).pubsub()
    subscriber.subscribe("chat.worker.c0ffee-1-ab12cd34")
    assert healthcheck.main(["worker", f"@{path}"], env) == 0


def test_usage_errors_exit_2():
    assert healthcheck.main([], {}) == 2
    assert healthcheck.main(["database", "x"], {}) == 2
