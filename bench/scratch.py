"""Django on a scratch database for the benchmarks that run the domain in-process (bench.worker,
bench.rooms, bench.feed): a fresh SQLite file, or an EMPTY database given by URL, migrated."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def scratch_database(name: str, database_url: str | None, deployed: bool = False) -> Iterator[str]:
    """Set Django up on the database and migrate it; yields its vendor ("sqlite", "postgresql").

    `deployed`: DEBUG off with a random SECRET_KEY, as a worker runs; otherwise development mode, so
    that the development SECRET_KEY is accepted (nothing here is signed with it)."""
    with tempfile.TemporaryDirectory(prefix=f"chat-bench-{name}-") as scratch:
        os.environ["DATABASE_URL"] = database_url or f"sqlite:///{scratch}/bench.sqlite3"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        if deployed:
            os.environ.update(DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), LOG_LEVEL="WARNING")
        else:
            os.environ.setdefault("DEBUG", "1")
        sys.path.insert(0, str(ROOT))
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        yield django.db.connection.vendor
