"""docker-compose.yml and the Dockerfile promise a runnable stack: checked by parsing them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
WORKERS = [name for name in SERVICES if name.startswith("worker_")]


def command(service: str) -> str:
    value = SERVICES[service]["command"]
    return " ".join(value) if isinstance(value, list) else value


def test_every_part_is_a_service():
    assert {"redis", "postgres", "migrate", "web", "gateway"} <= set(SERVICES)
    assert len(WORKERS) == 3


def test_services_run_the_documented_commands():
    assert command("gateway").startswith("gunicorn websockets_gateway.app:app --worker-class aiohttp.GunicornWebWorker")
    assert command("web").startswith("gunicorn project.wsgi")
    assert command("migrate") == "python manage.py migrate --noinput"
    topics = SERVICES["gateway"]["environment"]["WORKER_PROCESS_TOPICS"].split(",")
    subscribed = sorted(re.search(r"--subscribe_topic (\S+)", command(name)).group(1) for name in WORKERS)
    assert subscribed == sorted(topics), "every gateway topic has exactly one worker"


@pytest.mark.parametrize("service", ["web", "gateway", *WORKERS])
def test_app_services_have_settings_health_and_restart(service):
    spec = SERVICES[service]
    env = spec["environment"]
    for name in ("DATABASE_URL", "REDIS_URL", "WORKER_RESPONSE_TOPIC", "SECRET_KEY"):
        assert env.get(name), f"{service} does not set {name}"
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert spec["restart"] == "unless-stopped"
    assert "healthcheck" in spec and spec["healthcheck"]["test"]
    assert spec["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_gateway_and_web_settings_line_up():
    gateway = SERVICES["gateway"]["environment"]
    assert "http://localhost:8000" in gateway["ALLOWED_ORIGINS"].split(",")
    assert gateway["GATEWAY_URL"].endswith(":8080/ws")
    assert "8080:8080" in SERVICES["gateway"]["ports"]


def test_dockerfile_runs_as_non_root_without_build_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    assert re.search(r"^USER (?!root)\S+", final_stage, re.M)
    assert "apt-get install" not in final_stage and "gcc" not in final_stage
    assert "--only-binary=:all:" in dockerfile


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("docker client has no compose plugin")
    result = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
