"""`bench.worker` answers real new_message requests on a fresh SQLite file and prints its figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_the_cost_of_a_message_in_a_fixed_number_of_statements():
    done = subprocess.run([sys.executable, "-m", "bench.worker", "--messages", "64", "--batch", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["database"], figures["messages"], figures["batch"]) == ("sqlite", 64, 8)
    # The hot path: the members (with the sender's account), then on SQLite one transaction
    # (BEGIN IMMEDIATE, COMMIT) of the insert and its changes in the feed; on PostgreSQL one
    # statement writes both.
    assert figures["statements_per_message"] == 5
    # Messages in a row share their statements: the rooms' members, one insert of them all.
    assert figures["statements_per_batch"] == 5
    assert 0 < figures["cpu_us_per_message"] and 0 < figures["wall_us_per_message"]
