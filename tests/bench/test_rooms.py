"""`bench.rooms` runs on a fresh SQLite file and prints its figures as a JSON line."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_the_figures_with_a_fixed_query_count():
    done = subprocess.run([sys.executable, "-m", "bench.rooms", "--repeat", "1", "--messages-per-room", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["database"] == "sqlite"
    assert figures["list_rooms_20"]["queries"] == figures["list_rooms_200"]["queries"] == 4
    assert figures["sync"]["messages"] == 200 * 2  # every message of the user in 200 rooms
    assert "list_rooms, 200 rooms" in done.stdout
