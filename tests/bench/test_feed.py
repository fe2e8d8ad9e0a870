"""`bench.feed` fills a fresh SQLite file with changes and prints what sync by cursor costs, as a JSON line."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_the_figures_of_pages_from_an_old_and_a_recent_cursor():
    done = subprocess.run([sys.executable, "-m", "bench.feed", "--changes", "2000", "--rooms", "10", "--recent", "400",
                           "--limit", "100", "--pages", "3", "--whole"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["database"] == "sqlite" and figures["changes"] == 2000
    # Every other room is the user's, and every room's first change is a message posted.
    assert figures["users_changes"] == 1000
    assert figures["old_cursor"]["pages"] == 3 and figures["old_cursor"]["events"] > 0
    assert figures["recent_cursor"]["pages"] == 2  # 200 of the user's 400 last changes, 100 a page
    # A page costs the same queries whatever it holds; from now, the position of now alone.
    assert figures["old_cursor"]["queries"] == figures["recent_cursor"]["queries"] == [6]
    assert figures["from_now"] == {**figures["from_now"], "pages": 1, "events": 0, "queries": [1]}
    # An edit and a reaction come with their message's event (a page collapses them): fewer events than changes.
    assert figures["whole_walk"]["pages"] == 10 and 800 <= figures["whole_walk"]["events"] < 1000
    assert "from an old cursor" in done.stdout and "page time ratio" in done.stdout
