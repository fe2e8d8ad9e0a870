"""`python -m bench`'s command line: --redis-cluster and the options it cannot go with, and how a
target's stack and its cluster are stopped and watched. No processes are started."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.run import parse_args, redis_pids_of, stop_target
from scripts.stack import Stack


def test_redis_cluster_is_off_by_default_and_taken_with_real_and_baseline():
    args, _ = parse_args([])
    assert args.redis_cluster is False
    args, _ = parse_args(["--redis-cluster", "--quick", "--gateways", "4"])
    assert args.redis_cluster is True and args.targets == ["real", "baseline"] and args.gateways == 4
    args, _ = parse_args(["--redis-cluster", "--scenario", "direct"])
    assert args.redis_cluster is True and args.targets == ["real"]


@pytest.mark.parametrize("extra, says", [
    (["--redis-url", "redis://127.0.0.1:6379/0"], "not with --redis-url"),
    (["--gateway", "ws://127.0.0.1:1/ws", "--fixtures", "f.json"], "not with --redis-url or --gateway"),
    (["--targets", "real,channels"], "real and baseline targets"),
    (["--targets", "socketio"], "real and baseline targets"),
])
def test_redis_cluster_refuses_what_it_cannot_run_on(extra, says, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--redis-cluster", *extra])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


class FakeCluster:
    """A cluster's processes and a record of being stopped."""

    def __init__(self, masters: int) -> None:
        self.processes = {7000 + n: subprocess.Popen(["sleep", "30"]) for n in range(masters)}
        self.stopped = False

    def stop(self) -> None:
        for proc in self.processes.values():
            proc.kill()
            proc.wait()
        self.stopped = True


def test_a_target_on_a_cluster_watches_its_masters_and_stops_them_with_it(tmp_path: Path):
    stack = Stack.create(log_dir=tmp_path)
    assert redis_pids_of(stack) == []
    cluster = FakeCluster(3)
    stack.cluster = cluster  # type: ignore[assignment]
    try:
        assert redis_pids_of(stack) == [proc.pid for proc in cluster.processes.values()]
        worker = stack.spawn("worker", ["sleep", "30"])
        stop_target(stack)
        assert worker.poll() is not None and cluster.stopped
    finally:
        cluster.stop()
