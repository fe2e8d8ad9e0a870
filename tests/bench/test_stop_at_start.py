"""`python -m bench.stop_at_start`: stops a starting gateway and prints how long it took."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scripts.stack import GATEWAY_GRACEFUL_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]


def test_prints_the_stop_times_of_each_run():
    done = subprocess.run([sys.executable, "-m", "bench.stop_at_start", "--runs", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    line, summary = done.stdout.strip().splitlines()[-2:]
    result = json.loads(summary)
    assert result["runs"] == 2 and line.startswith("2 stops ")
    # Every stop ends: by itself, or at worst when gunicorn kills what is left at its graceful timeout.
    assert 0 < result["median_s"] <= result["max_s"] < GATEWAY_GRACEFUL_TIMEOUT * 3
