"""docs/deployment.md says what the deployment files do: its links, files and figures are checked."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deployment.md").read_text()
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

# Linked before it exists: the benchmark write-up is being written alongside this guide.
PENDING = {"docs/performance.md"}


def test_every_link_and_named_file_exists():
    linked = {str((ROOT / "docs" / target.split("#")[0]).resolve().relative_to(ROOT))
              for target in re.findall(r"\]\(([^)#:]+(?:#[^)]*)?)\)", DOC)}
    named = set(re.findall(r"`((?:tests|deploy|docs|websockets_gateway|workers|project)/[\w/.-]+\.\w+)`", DOC))
    named |= set(re.findall(r"\b(docs/[\w-]+\.md)\b", DOC))
    missing = {path for path in linked | named if not (ROOT / path).exists()} - PENDING
    assert not missing, f"docs/deployment.md names files that do not exist: {missing}"
    assert "deploy/nginx.conf" in linked and "README.md" in linked


def test_the_nginx_figures_are_the_files():
    for directive in ("proxy_read_timeout 300s", "worker_shutdown_timeout 60s", "least_conn",
                      "map $http_upgrade $connection_upgrade", "proxy_http_version 1.1"):
        assert directive in NGINX, directive
        assert f"`{directive}" in DOC or directive.split()[0] in DOC, directive


def test_the_compose_figures_are_the_files():
    gateway = COMPOSE["services"]["gateway"]
    assert gateway["stop_grace_period"] == "20s" and "`stop_grace_period: 20s`" in DOC
    assert gateway["command"][gateway["command"].index("--graceful-timeout") + 1] == "10"
    assert "`--graceful-timeout 10`" in DOC
    assert "--metrics-port" in COMPOSE["services"]["worker"]["command"] and "9100" in DOC
    assert COMPOSE["x-app"]["environment"]["LOG_FORMAT"].endswith("json}") and "`LOG_FORMAT=json`" in DOC
