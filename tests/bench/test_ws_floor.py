"""`python -m bench.ws_floor`: runs against its own echo server and prints a figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_a_positive_rss_per_connection():
    done = subprocess.run([sys.executable, "-m", "bench.ws_floor", "--connections", "500"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["connections"] == 500 and result["heartbeat_s"] == 0.0
    # An idle WebSocket costs aiohttp at least its objects: a few KiB, never nothing.
    assert result["rss_per_connection_bytes"] > 1024
    assert "KiB" in done.stdout.splitlines()[0]


def test_a_cookie_header_of_the_asked_size_is_sent():
    from bench.ws_floor import cookie_header

    assert cookie_header(0) == {}
    header = cookie_header(1000)["Cookie"]
    assert 1000 <= len(header) < 1100
    assert all("=" in pair for pair in header.split("; "))
