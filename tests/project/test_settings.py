"""Django settings come from the environment: checked in fresh interpreters, each with its own env."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from scripts.stack import ROOT

PRINT_SETTINGS = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "db = s.DATABASES['default']; "
    "print(json.dumps({'engine': db['ENGINE'], 'name': str(db['NAME']), 'host': db.get('HOST'), "
    "'debug': s.DEBUG, 'redis': s.REDIS_URL, 'topic': s.WORKER_RESPONSE_TOPIC, "
    "'max_length': s.MAX_MESSAGE_LENGTH, 'options': db.get('OPTIONS', {})}))"
)


def load(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "WORKER_RESPONSE_TOPIC")}
    clean.update(env, DJANGO_SETTINGS_MODULE="project.settings")
    return subprocess.run([sys.executable, "-c", PRINT_SETTINGS], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=60)


def test_defaults_are_sqlite_in_the_project_root_and_local_redis():
    result = load()
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(ROOT / "db.sqlite3")
    assert values["redis"] == "redis://127.0.0.1:6379/0"
    assert values["topic"] == "worker_response"
    assert values["max_length"] == 4000
    # Several workers share the file: WAL and a lock timeout keep them from failing on each other.
    assert values["options"]["timeout"] >= 5 and "journal_mode=WAL" in values["options"]["init_command"]



def test_a_sqlite_connection_gets_the_write_settings(tmp_path):
    # Read back from SQLite itself: the init command ran, each pragma took.
    script = ("import json, django; django.setup(); from django.db import connection; c = connection.cursor(); "
              "print(json.dumps({p: c.execute(f'PRAGMA {p}').fetchone()[0] for p in "
              "('journal_mode', 'synchronous', 'wal_autocheckpoint', 'journal_size_limit')}))")
    clean = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    clean.update(DATABASE_URL=f"sqlite:///{tmp_path / 'settings.sqlite3'}", DJANGO_SETTINGS_MODULE="project.settings")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=clean, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    # synchronous 1 is NORMAL; checkpoints every 10,000 pages, the WAL cut back to 64 MiB after one.
    assert json.loads(result.stdout) == {"journal_mode": "wal", "synchronous": 1, "wal_autocheckpoint": 10000,
                                         "journal_size_limit": 64 * 1024 * 1024}

def test_database_and_redis_urls_are_read_from_the_environment():
    result = load(DATABASE_URL="postgres://chat:pw@db.example:5433/chatdb", REDIS_URL="redis://bus:6380/2",
                  WORKER_RESPONSE_TOPIC="replies", MAX_MESSAGE_LENGTH="100")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.postgresql"
    assert (values["name"], values["host"]) == ("chatdb", "db.example")
    assert values["redis"] == "redis://bus:6380/2"
    assert values["topic"] == "replies" and values["max_length"] == 100


def test_the_development_secret_key_is_refused_when_debug_is_off():
    refused = load(DEBUG="0")
    assert refused.returncode != 0
    assert "SECRET_KEY" in refused.stderr
    accepted = load(DEBUG="0", SECRET_KEY="a-real-secret-for-this-test-only-0123456789")
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["debug"] is False
