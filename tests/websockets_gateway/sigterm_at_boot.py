"""gunicorn settings for test_gunicorn.py: the first worker process sends itself SIGTERM after
its signal handlers are added and its app is imported, before its event loop runs (gunicorn's
`post_worker_init` hook): a stop that comes while a deploy's new process is still starting.
Later workers (gunicorn replaces the one that exits) start normally.
"""

import os
import signal
from pathlib import Path


def post_worker_init(worker):
    marker = Path(os.environ["SIGTERM_AT_BOOT_MARKER"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGTERM)
