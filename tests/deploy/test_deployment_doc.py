"""docs/deployment.md says what the deployment files do: its links, files and figures are checked."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deployment.md").read_text()
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

def test_every_link_and_named_file_exists():
    linked = {str((ROOT / "docs" / target.split("#")[0]).resolve().relative_to(ROOT))
              for target in re.findall(r"\]\(([^)#:]+(?:#[^)]*)?)\)", DOC)}
    named = set(re.findall(r"`((?:tests|deploy|docs|websockets_gateway|workers|project)/[\w/.-]+\.\w+)`", DOC))
    named |= set(re.findall(r"\b(docs/[\w-]+\.md)\b", DOC))
    missing = {path for path in linked | named if not (ROOT / path).exists()}
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


def yaml_blocks(text: str) -> list[object]:
    return [yaml.safe_load(block) for block in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)]


def test_the_worker_deployment_manifest_parses_and_runs_what_compose_runs():
    [deployment] = [block for block in yaml_blocks(DOC) if isinstance(block, dict) and block.get("kind") == "Deployment"]
    assert deployment["apiVersion"] == "apps/v1"
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    worker = COMPOSE["services"]["worker"]
    # Time to finish the message in hand and leave the registry, as compose's stop_grace_period gives.
    assert pod["terminationGracePeriodSeconds"] >= int(worker["stop_grace_period"].removesuffix("s"))
    [container] = pod["containers"]
    assert container["command"] == worker["command"] and "--subscribe_topic" not in container["command"]
    health = worker["healthcheck"]["test"][1:]
    assert container["readinessProbe"]["exec"]["command"] == health
    assert container["livenessProbe"]["exec"]["command"] == health
    # The topic file is written under /tmp, which a read-only root file system must mount.
    topic_file = container["command"][container["command"].index("--topic-file") + 1]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert topic_file.startswith("/tmp/") and mounts["/tmp"] in {volume["name"] for volume in pod["volumes"]}
    env = {item["name"] for item in container.get("env", [])}
    assert "WORKER_PROCESS_TOPICS" not in env and "WORKER_TTL" in env
    assert {port["containerPort"] for port in container["ports"]} == {9100}
    assert pod["securityContext"]["runAsUser"] == 10001 and "uid 10001" in DOC


def test_the_doc_says_how_to_scale_the_compose_workers():
    assert "docker compose up -d --scale worker=6" in DOC
    assert COMPOSE["services"]["worker"]["deploy"]["replicas"] == 3 and "3 unless said" in DOC


def test_the_pruner_cronjob_parses_and_runs_prune_changes_once():
    [cronjob] = [block for block in yaml_blocks(DOC) if isinstance(block, dict) and block.get("kind") == "CronJob"]
    assert cronjob["apiVersion"] == "batch/v1"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    # Compose's pruner without --every: once, on the CronJob's schedule.
    pruner = COMPOSE["services"]["pruner"]["command"]
    assert container["command"] == pruner[:pruner.index("--every")] == ["python", "manage.py", "prune_changes"]
    assert pod["securityContext"]["runAsUser"] == 10001
