"""docker-compose.yml and the Dockerfile promise a stack a team can deploy: checked by parsing them.

No Docker engine is needed: the compose file is read with PyYAML and its `${VAR:-default}`
references are filled in here the way compose fills them in; `docker compose config` runs too
where a compose plugin is installed.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()

# ---------------------------------------------------------------------------------------------
# Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
# ${VAR?error}, $VAR and $$ (a literal $). Enough of it to read the file as compose does.
# ---------------------------------------------------------------------------------------------

SUBSTITUTION = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


class MissingVariable(ValueError):
    """A ${VAR:?message} whose variable is unset: compose refuses to start."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        dollar, name, operator, argument, bare = match.groups()
        if dollar:
            return "$"
        name = name or bare
        current = env.get(name)
        empty = current is None or (operator or "").startswith(":") and current == ""
        if operator in (":-", "-"):
            return argument if empty else current
        if operator in (":?", "?"):
            if empty:
                raise MissingVariable(f"{name}: {argument}")
            return current
        return current or ""

    return SUBSTITUTION.sub(substitute, value)


# The environment of a first `docker compose up` on a laptop: the required values, nothing else.
LAPTOP_ENV = {"SECRET_KEY": "a-long-random-secret-for-the-compose-test-0123456789-abcdefghijklmnop",
              "POSTGRES_PASSWORD": "a-random-database-password-for-the-compose-test"}
RAW = yaml.safe_load(COMPOSE_TEXT)
COMPOSE = interpolate(RAW, LAPTOP_ENV)
SERVICES = COMPOSE["services"]
WORKERS = ["worker"]
APPS = ["web", "gateway", *WORKERS]
# Runs a command on a schedule and serves nothing a health check could ask.
PRUNER = "pruner"
LONG_RUNNING = [name for name in SERVICES if name not in ("migrate", PRUNER)]


def command(service: str) -> list[str]:
    value = SERVICES[service]["command"]
    return value if isinstance(value, list) else shlex.split(value)


def option(service: str, flag: str) -> str | None:
    args = command(service)
    return args[args.index(flag) + 1] if flag in args else None


def seconds(duration: str | int | float) -> float:
    """A compose duration: "20s", "1m30s", "500ms", or a number of seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# ---------------------------------------------------------------------------------------------
# The services
# ---------------------------------------------------------------------------------------------


def test_every_part_is_a_service():
    assert set(SERVICES) == {"redis", "postgres", "migrate", "web", "gateway", "worker", "pruner"}


def test_services_run_the_documented_commands():
    # aiohttp's uvloop worker: the documented command's app (aiohttp.GunicornWebWorker runs it
    # too, tests/websockets_gateway/test_gunicorn.py) on uvloop, which the image installs.
    assert " ".join(command("gateway")).startswith(
        "gunicorn websockets_gateway.app:app --worker-class aiohttp.GunicornUVLoopWebWorker")
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^uvloop==[\d.]+; sys_platform != \"win32\"$", requirements, re.M), \
        "the image (Linux) must install uvloop, or the gateway's worker class cannot start"
    assert " ".join(command("web")).startswith("gunicorn project.wsgi")
    assert command("migrate") == ["python", "manage.py", "migrate", "--noinput"]
    for worker in WORKERS:
        assert command(worker)[:3] == ["python", "manage.py", "message_process_worker"]


def test_gunicorn_runs_without_its_control_socket():
    """Its default place is $HOME/.gunicorn, which the image's unprivileged user cannot write;
    and nothing in a container should resize or reload gunicorn behind the orchestrator's back."""
    assert "--no-control-socket" in command("web") and "--no-control-socket" in command("gateway")
    assert "--no-control-socket" in re.search(r"^CMD (.+)$", DOCKERFILE, re.M).group(1)


def test_the_gateway_runs_several_processes():
    assert int(option("gateway", "--workers")) >= 2
    assert int(option("web", "--workers")) >= 2


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck_a_restart_policy_and_rotated_logs(service):
    spec = SERVICES[service]
    assert spec.get("restart") in ("unless-stopped", "always"), f"{service} is not restarted when it dies"
    health = spec.get("healthcheck") or {}
    assert health.get("test") and not health.get("disable"), f"{service} has no healthcheck"
    assert health["test"][0] in ("CMD", "CMD-SHELL")
    for key in ("interval", "timeout"):
        assert seconds(health[key]) > 0
    assert seconds(health["timeout"]) <= seconds(health["interval"])
    assert spec["logging"]["options"]["max-size"], f"{service} keeps its logs forever"


@pytest.mark.parametrize("service", APPS)
def test_app_health_checks_call_the_checker_with_what_the_service_serves(service):
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "deploy/healthcheck.py"]
    assert (ROOT / "deploy" / "healthcheck.py").is_file()
    mode, target = test[3:]
    if service in WORKERS:
        # The file the worker writes its topic to: a scaled worker's topic is its own, taken at start.
        assert (mode, target) == ("worker", "@" + option(service, "--topic-file"))
        assert option(service, "--topic-file").startswith("/tmp/"), "the image's user writes only there"
    else:
        port = option(service, "--bind").rsplit(":", 1)[1]
        assert mode == service
        assert target == f"http://127.0.0.1:{port}/" + ("healthz" if service == "gateway" else "login/")


def test_migrate_runs_once_and_every_app_waits_for_it():
    migrate = SERVICES["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["environment"]["DATABASE_URL"] == SERVICES["web"]["environment"]["DATABASE_URL"]
    assert migrate["image"] == SERVICES["web"]["image"]
    for service in APPS:
        depends = SERVICES[service]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", service
        assert depends["redis"]["condition"] == "service_healthy", service
        assert depends["postgres"]["condition"] == "service_healthy", service


def test_one_worker_service_scales_and_every_worker_takes_a_topic_of_its_own():
    """`docker compose up --scale worker=N`: N containers of one service, so nothing in it may be
    one container's alone (a name, a host port, a topic), and the gateways find the workers in
    the registry rather than in a list."""
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert option("worker", "--subscribe_topic") is None
    assert worker["deploy"]["replicas"] >= 2
    for service in ("gateway", "web", "worker"):
        assert "WORKER_PROCESS_TOPICS" not in SERVICES[service]["environment"], \
            "the gateways choose among the registered workers"


def test_one_pruner_prunes_the_change_feed_every_hour_and_is_restarted_when_it_fails():
    pruner = SERVICES[PRUNER]
    assert command(PRUNER) == ["python", "manage.py", "prune_changes", "--every", "3600"]
    assert pruner["restart"] == "unless-stopped" and pruner["logging"]["options"]["max-size"]
    assert "healthcheck" not in pruner and "ports" not in pruner and "expose" not in pruner
    assert pruner.get("deploy", {}).get("replicas", 1) == 1
    assert pruner["image"] == SERVICES["web"]["image"]
    assert pruner["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert pruner["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (ROOT / "chat" / "management" / "commands" / "prune_changes.py").is_file()
    assert "prune_changes --every 3600" in (ROOT / "docs" / "deployment.md").read_text()


def test_workers_serve_metrics():
    for worker in WORKERS:
        assert option(worker, "--metrics-port") == "9100"


@pytest.mark.parametrize("service", ["web", "gateway"])
def test_stop_grace_period_outlasts_gunicorns_graceful_timeout(service):
    """Docker sends SIGKILL after stop_grace_period (10 s unless said): it must come after
    gunicorn's graceful timeout (30 s unless said), or the gateway's clients never get their
    1001 and web requests in hand are cut."""
    graceful = float(option(service, "--graceful-timeout") or 30)
    assert seconds(SERVICES[service].get("stop_grace_period", "10s")) >= graceful + 5


def test_workers_have_time_to_finish_the_message_in_hand():
    for worker in WORKERS:
        assert seconds(SERVICES[worker].get("stop_grace_period", "10s")) >= 10


def test_app_services_talk_to_the_compose_postgres_and_redis():
    for service in ["migrate", *APPS, PRUNER]:
        env = SERVICES[service]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["DEBUG"] == "0"
        assert env["LOG_FORMAT"] == "json"


@pytest.mark.parametrize("required", ["SECRET_KEY", "POSTGRES_PASSWORD"])
def test_secrets_are_required_and_none_is_shipped(required):
    with pytest.raises(MissingVariable, match=required):
        interpolate(RAW, {name: value for name, value in LAPTOP_ENV.items() if name != required})
    with pytest.raises(MissingVariable, match=required):
        interpolate(RAW, {**LAPTOP_ENV, required: ""})
    # Every use of it is required: no default anywhere in the file (a ${VAR:-default} would win
    # wherever it stood).
    uses = re.findall(r"\$\{" + required + r"(\W{0,2})", COMPOSE_TEXT)
    assert uses and set(uses) == {":?"}, f"{required}: {uses}"


def test_the_database_password_is_the_one_postgres_is_started_with():
    password = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password == LAPTOP_ENV["POSTGRES_PASSWORD"]
    for service in ["migrate", *APPS]:
        assert f"postgres://chat:{password}@postgres:5432/chat" == SERVICES[service]["environment"]["DATABASE_URL"]
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in dockerignore and ".git" in dockerignore


def test_deployment_values_come_from_the_environment():
    production = {**LAPTOP_ENV, "ALLOWED_HOSTS": "chat.example.com", "ALLOWED_ORIGINS": "https://chat.example.com",
                  "GATEWAY_URL": "wss://chat.example.com/ws", "SECURE_SSL_REDIRECT": "1",
                  "SESSION_COOKIE_SECURE": "1", "CSRF_COOKIE_SECURE": "1", "GATEWAY_PROCESSES": "4"}
    services = interpolate(RAW, production)["services"]
    env = services["gateway"]["environment"]
    assert env["ALLOWED_ORIGINS"] == "https://chat.example.com"
    assert services["web"]["environment"]["GATEWAY_URL"] == "wss://chat.example.com/ws"
    assert all(services["web"]["environment"][name] == "1"
               for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"))
    assert "--workers" in services["gateway"]["command"] and "4" in services["gateway"]["command"]


def published(services: Mapping[str, Any]) -> dict[str, list[tuple[str, str, str]]]:
    """Each service's published ports as (address, host port, container port), in the short
    syntax this file uses; an address left out means every interface."""
    found = {}
    for name, spec in services.items():
        entries = []
        for entry in spec.get("ports", []):
            assert isinstance(entry, str), f"{name}: use the short syntax, ADDRESS:HOST:CONTAINER"
            parts = entry.split(":")
            entries.append(tuple(parts) if len(parts) == 3 else ("0.0.0.0", *parts[-2:]))
        if entries:
            found[name] = entries
    return found


def test_only_what_a_load_balancer_talks_to_is_published_and_on_loopback_by_default():
    """web and the gateway are deploy/nginx.conf's upstreams; PostgreSQL, Redis and the workers'
    metrics stay on compose's own network. Published on 127.0.0.1 by default: a first `up` on a
    laptop or a server opens nothing to the network."""
    assert published(SERVICES) == {"web": [("127.0.0.1", "8000", "8000")],
                                   "gateway": [("127.0.0.1", "8080", "8080")]}
    for service in WORKERS:
        assert "ports" not in SERVICES[service] and SERVICES[service]["expose"] == ["9100"]
    # CHAT_BIND opens them where the load balancer reaches them (0.0.0.0: every interface).
    services = interpolate(RAW, {**LAPTOP_ENV, "CHAT_BIND": "0.0.0.0"})["services"]
    assert published(services) == {"web": [("0.0.0.0", "8000", "8000")], "gateway": [("0.0.0.0", "8080", "8080")]}


def test_gateway_and_web_settings_line_up():
    gateway = SERVICES["gateway"]["environment"]
    assert "http://localhost:8000" in gateway["ALLOWED_ORIGINS"].split(",")
    assert gateway["GATEWAY_URL"] == "ws://localhost:8080/ws"
    ports = {name: entries[0][1:] for name, entries in published(SERVICES).items()}
    assert ports == {"web": ("8000", option("web", "--bind").rsplit(":", 1)[1]),
                     "gateway": ("8080", option("gateway", "--bind").rsplit(":", 1)[1])}


# ---------------------------------------------------------------------------------------------
# Every setting the code reads from the environment is set, or has a safe default and a reason
# ---------------------------------------------------------------------------------------------

# Folders of code that runs in the containers, by the services that run it.
GATEWAY_CODE = ["websockets_gateway"]
DJANGO_CODE = ["project", "chat", "workers"]
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

# Read by the code, deliberately not set in docker-compose.yml: the default is the right value
# for a deployment, and docs/deployment.md or docs/configuration.md says when to change it.
SAFE_DEFAULTS = {
    # gateway: the protocol's documented limits (docs/configuration.md's settings, docs/reliability.md's
    # "every buffer has a bound"); a deployment changes them only for a measured reason.
    "REQUEST_TIMEOUT": "10 s: the protocol's documented `timeout`; clients are written against it",
    "AUTH_TIMEOUT": "10 s: the protocol's documented close 4001",
    "WS_MAX_MESSAGE_SIZE": "64 KiB: the protocol's documented close 1009",
    "MAX_IN_FLIGHT": "32: a bound per connection (docs/reliability.md)",
    "SEND_QUEUE_SIZE": "256 frames: a bound per connection (docs/reliability.md)",
    "RATE_LIMIT": "30/s: a bound per connection (docs/reliability.md)",
    "RATE_LIMIT_BURST": "60: a bound per connection (docs/reliability.md)",
    "WS_COMPRESSION": "off: memory per connection and compression bombs (docs/configuration.md)",
    "MAX_CONNECTIONS": "10,000 per process: past it the handshake is 503 and the LB tries another gateway",
    "PRESENCE_TTL": "15 s: how late a killed gateway's users stop counting online",
    "WORKER_PROCESS_TOPICS": "unset: the gateways choose among the workers registered in Redis",
    "TRUSTED_PROXIES": "none: clients reach the gateway directly; behind a proxy, its addresses (docs/deployment.md)",
    "GATEWAY_ID": "the container's host name, unique per container; set it where host names repeat (docs/deployment.md)",
    "REDIS_CLUSTER": "off: the compose file runs one Redis; on a Redis Cluster set it on every part (docs/deployment.md)",
    "MAX_CONNECTIONS_PER_IP": "no limit: many users share a NAT's address; set it with TRUSTED_PROXIES (docs/deployment.md)",
    # Django
    "MAX_MESSAGE_LENGTH": "4000: the protocol's documented text_too_long",
    "WORKER_TTL": "10 s: how late a killed worker leaves the gateways' choice (docs/deployment.md)",
    "DB_CONN_MAX_AGE": "60 s persistent connections; set 0 behind pgbouncer in transaction mode (docs/deployment.md)",
    "SECURE_HSTS_SECONDS": "one year, on whenever DEBUG is off",
    "SECURE_HSTS_PRELOAD": "a commitment for the whole domain and its subdomains: the domain's owner opts in",
    "TICKET_MAX_AGE": "60 s: a chat page's WebSocket ticket, fetched before each connection (docs/rest-api.md)",
    "THROTTLE_LOGIN_RATE": "10/min per client address: password guessing (docs/rest-api.md)",
    "THROTTLE_WRITE_RATE": "30/s per user: the WebSocket's RATE_LIMIT (docs/rest-api.md)",
    "NUM_PROXIES": "0: clients reach the web process directly; 1 behind deploy/nginx.conf (docs/deployment.md)",
    "SYNC_RETENTION_DAYS": "30 days of the change feed: a client away longer reloads (docs/deployment.md)",
}

# Set in docker-compose.yml ahead of the code that will read it (name -> what reads it): an entry
# must go once the code reads the name (the test below says so).
NOT_YET_READ: dict[str, str] = {}


def _is_environ(node: ast.AST) -> bool:
    """`os.environ`, `environ`, or a mapping the code calls `env` (the gateway's settings)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
        (isinstance(node, ast.Name) and node.id in ("environ", "env"))


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value):
        return node.value
    return None


def env_names_read(source: str) -> set[str]:
    """The environment variables a module reads, found in its syntax tree:
    os.environ.get("X"), os.environ["X"], os.getenv("X"), "X" in os.environ, env.get("X"),
    env_bool("X"), env_list("X") (any helper named env_*), and a helper given the environment,
    _number(env, "X", ...)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func, args = node.func, node.args
            first = _name(args[0]) if args else None
            if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
                found.add(first) if first else None
            elif isinstance(func, ast.Attribute) and func.attr == "getenv":
                found.add(first) if first else None
            elif isinstance(func, ast.Name) and func.id.startswith("env_"):
                found.add(first) if first else None
            elif any(_is_environ(arg) for arg in args):
                found.update(name for name in map(_name, args) if name)
        elif isinstance(node, ast.Subscript) and _is_environ(node.value) and _name(node.slice):
            found.add(_name(node.slice))
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators) and _name(node.left):
            found.add(_name(node.left))
    return found


def read_by(folders: list[str]) -> dict[str, str]:
    """Each environment variable read by the code under those folders -> the first file that reads it."""
    names: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for name in env_names_read(path.read_text()):
                names.setdefault(name, str(path.relative_to(ROOT)))
    return names


def dockerfile_env() -> set[str]:
    final_stage = DOCKERFILE.split("\nFROM ")[-1]
    names: set[str] = set()
    for line in re.findall(r"^ENV (.+)$", final_stage, re.M):
        names.update(item.split("=", 1)[0] for item in shlex.split(line))
    return names


def test_the_collector_finds_the_settings_it_must():
    """So that a change of style in the settings modules cannot make the check below pass empty."""
    assert {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
            "REDIS_URL", "LOG_LEVEL"} <= set(read_by(["project"]))
    assert {"REDIS_URL", "WORKER_PROCESS_TOPICS", "ALLOWED_ORIGINS", "REQUEST_TIMEOUT", "WS_COMPRESSION",
            "PRESENCE_TTL", "LOG_LEVEL"} <= set(read_by(GATEWAY_CODE))
    assert env_names_read('x = int(os.environ.get("A_NEW_ONE", "1")); y = os.environ["OTHER"]; '
                          'z = env_int("THIRD"); w = _number(env, "FOURTH", "1", int, 0)') == \
        {"A_NEW_ONE", "OTHER", "THIRD", "FOURTH"}


@pytest.mark.parametrize("service, folders", [
    ("gateway", GATEWAY_CODE), ("web", DJANGO_CODE), ("migrate", DJANGO_CODE),
    *((worker, DJANGO_CODE) for worker in WORKERS), (PRUNER, DJANGO_CODE)])
def test_every_setting_the_code_reads_is_set_in_compose(service, folders):
    """A new setting read from the environment fails this test until docker-compose.yml sets it
    or SAFE_DEFAULTS says why its default is right for a deployment."""
    provided = set(SERVICES[service]["environment"]) | dockerfile_env()
    missing = {name: path for name, path in read_by(folders).items()
               if name not in provided and name not in SAFE_DEFAULTS}
    assert not missing, f"{service}: read by the code, not set in docker-compose.yml nor in SAFE_DEFAULTS: {missing}"


def test_the_allow_lists_name_real_settings():
    read = set(read_by(GATEWAY_CODE + DJANGO_CODE))
    assert set(SAFE_DEFAULTS) <= read, f"stale SAFE_DEFAULTS: {set(SAFE_DEFAULTS) - read}"
    set_in_compose = {name for spec in SERVICES.values() if "build" in spec for name in spec["environment"]}
    unknown = set_in_compose - read - set(NOT_YET_READ)
    assert not unknown, f"set in docker-compose.yml but read by no code (a typo?): {unknown}"
    assert not set(SAFE_DEFAULTS) & set_in_compose, "a setting is both set and allow-listed"
    assert not set(NOT_YET_READ) & read, f"read by the code now, drop from NOT_YET_READ: {set(NOT_YET_READ) & read}"


# ---------------------------------------------------------------------------------------------
# The Dockerfile
# ---------------------------------------------------------------------------------------------


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def test_dockerfile_is_multi_stage_and_the_final_stage_copies_the_built_venv():
    assert len(stages()) >= 2
    assert re.search(r"^COPY --from=build /venv /venv$", stages()[-1], re.M)


def test_dockerfile_installs_wheels_only_in_the_build_stage():
    build = stages()[0]
    installs = re.findall(r"pip install[^\n]*", build)
    assert installs and all("--only-binary=:all:" in line for line in installs)
    assert "pip install" not in stages()[-1]


def test_dockerfile_final_stage_runs_as_non_root_without_build_tools():
    final_stage = stages()[-1]
    users = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert users and users[-1] not in ("root", "0", "0:0"), "the final stage must end as a non-root user"
    # Nothing after USER runs as root again, and nothing installs system packages or compilers.
    for tool in ("apt-get", "apt ", "apk ", "dnf ", "yum ", "gcc", "g++", "build-essential", "make ",
                 "python3-dev", "libpq-dev"):
        assert tool not in final_stage, f"the final stage mentions {tool.strip()}"


def test_dockerfile_collects_static_files_at_build():
    final_stage = stages()[-1]
    run = next(line for line in re.findall(r"^RUN .+(?:\n\s+.+)*", final_stage, re.M) if "collectstatic" in line)
    assert "DEBUG=0" in run and "--noinput" in run
    # Before USER, so that the files belong to root and the app cannot change them.
    assert final_stage.index("collectstatic") < final_stage.index("\nUSER ")


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("docker client has no compose plugin")
    result = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                            capture_output=True, text=True, env={**os.environ, **LAPTOP_ENV})
    assert result.returncode == 0, result.stderr
