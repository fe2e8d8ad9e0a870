"""How long a gateway takes to stop when SIGTERM comes while it is still starting.

`python -m bench.stop_at_start [--runs N]` starts a gunicorn gateway of two processes (the
stack's worker class: uvloop's where installed) on an embedded Redis (or REDIS_URL), sends it
SIGTERM at a random moment 0.15-0.9 s after launch, and times its exit; N times. It prints a
line for people and one JSON line. A process that missed the stop is killed at gunicorn's
graceful timeout (scripts/stack.py: 8 s), so those stops show as the slow ones (see
websockets_gateway/loop_signals.py).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from scripts.stack import GATEWAY_GRACEFUL_TIMEOUT, GATEWAY_WORKER_CLASS, Stack

# A stop slower than this went past the gateway's own bounds (the 1 s tick of gunicorn's aiohttp
# worker, the 5 s close timeout for clients: there are none here) to the graceful timeout.
SLOW = 5.0
# When SIGTERM comes, after launch: from importing the app to serving.
SIGNAL_AFTER = (0.15, 0.9)


def stop_once(stack: Stack, run: int) -> float:
    proc, _ = stack.spawn_gateway(processes=2, name=f"gateway-{run}")
    time.sleep(random.uniform(*SIGNAL_AFTER))
    started = time.monotonic()
    # Killed past three graceful timeouts: a stop that hangs is reported, not waited for.
    stack.stop_process(proc, timeout=GATEWAY_GRACEFUL_TIMEOUT * 3)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as log_dir:
        stack = Stack.create(log_dir=Path(log_dir), WORKER_PROCESS_TOPICS="stop_at_start_nobody", LOG_LEVEL="WARNING")
        try:
            stack.start_redis()
            times = [stop_once(stack, run) for run in range(args.runs)]
        finally:
            stack.stop()
    slow = sum(took > SLOW for took in times)
    print(f"{args.runs} stops {SIGNAL_AFTER[0]}-{SIGNAL_AFTER[1]} s after launch ({GATEWAY_WORKER_CLASS}): "
          f"{slow} took over {SLOW:.0f} s; median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    print(json.dumps({"runs": args.runs, "worker_class": GATEWAY_WORKER_CLASS, "slow": slow,
                      "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
