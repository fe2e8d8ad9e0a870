"""`python -m scripts.cluster serve`: a local cluster kept until Ctrl-C, then stopped."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from scripts.cluster import ClusterUnavailable, cluster_server_binary
from scripts.stack import ROOT, port_open

# Bounds of the waits, for a busy machine; none is a measured figure.
START_WAIT = 60.0
STOP_WAIT = 30.0


def test_serve_keeps_a_cluster_until_ctrl_c_and_then_stops_it():
    try:
        cluster_server_binary()
    except ClusterUnavailable as exc:
        pytest.skip(f"{exc}; scripts/test installs Debian's redis-server where it may")
    proc = subprocess.Popen([sys.executable, "-m", "scripts.cluster", "serve"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        assert "Press Ctrl-C to stop.\n" in lines, "".join(lines)
        nodes = next(line for line in lines if line.startswith("Redis Cluster:"))
        ports = [int(port) for port in nodes.split("(nodes ", 1)[1].split(";", 1)[0].split(", ")]
        assert len(ports) == 3 and all(port_open(port) for port in ports)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(STOP_WAIT) == 0
        assert not any(port_open(port) for port in ports)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
