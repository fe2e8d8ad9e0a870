"""Django settings come from the environment: checked in fresh interpreters, each with its own env."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scripts.stack import ROOT
from tests.deploy.test_compose import read_by

PRINT_SETTINGS = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "db = s.DATABASES['default']; "
    "print(json.dumps({'engine': db['ENGINE'], 'name': str(db['NAME']), 'host': db.get('HOST'), "
    "'debug': s.DEBUG, 'redis': s.CHAT['REDIS_URL'], 'topic': s.CHAT['WORKER_RESPONSE_TOPIC'], "
    "'max_length': s.CHAT['MAX_MESSAGE_LENGTH'], 'options': db.get('OPTIONS', {})}))"
)


def load(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "WORKER_RESPONSE_TOPIC")}
    clean.update(env, DJANGO_SETTINGS_MODULE="project.settings")
    return subprocess.run([sys.executable, "-c", PRINT_SETTINGS], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=60)


def test_defaults_are_sqlite_in_the_project_root_and_local_redis():
    result = load(DEBUG="1")
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
    clean.update(DATABASE_URL=f"sqlite:///{tmp_path / 'settings.sqlite3'}", DJANGO_SETTINGS_MODULE="project.settings",
                 DEBUG="1")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=clean, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    # synchronous 1 is NORMAL; checkpoints every 10,000 pages, the WAL cut back to 64 MiB after one.
    assert json.loads(result.stdout) == {"journal_mode": "wal", "synchronous": 1, "wal_autocheckpoint": 10000,
                                         "journal_size_limit": 64 * 1024 * 1024}

def test_database_and_redis_urls_are_read_from_the_environment():
    result = load(DEBUG="1", DATABASE_URL="postgres://chat:pw@db.example:5433/chatdb", REDIS_URL="redis://bus:6380/2",
                  WORKER_RESPONSE_TOPIC="replies", MAX_MESSAGE_LENGTH="100")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.postgresql"
    assert (values["name"], values["host"]) == ("chatdb", "db.example")
    assert values["redis"] == "redis://bus:6380/2"
    assert values["topic"] == "replies" and values["max_length"] == 100


A_SECRET_KEY = "a-real-secret-for-this-test-only-0123456789"


def test_debug_is_off_unless_asked_for():
    assert json.loads(load(SECRET_KEY=A_SECRET_KEY).stdout)["debug"] is False
    for value in ("1", "true", "on", "yes"):
        assert json.loads(load(DEBUG=value).stdout)["debug"] is True, value
    assert json.loads(load(DEBUG="", SECRET_KEY=A_SECRET_KEY).stdout)["debug"] is False


def test_the_development_secret_key_is_accepted_only_with_debug_on():
    # Nothing set at all (a server started bare) and DEBUG=0 alike.
    for env in ({}, {"DEBUG": "0"}, {"DEBUG": "0", "SECRET_KEY": ""}):
        refused = load(**env)
        assert refused.returncode != 0, env
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("django.core.exceptions.ImproperlyConfigured: SECRET_KEY"), refused.stderr
    accepted = load(DEBUG="0", SECRET_KEY=A_SECRET_KEY)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["debug"] is False


# One bad value for each setting the web part and the workers read (production mode, with a real
# key, so that the settings read only when DEBUG is off are read too).
BAD_VALUES = [
    ("DEBUG", "maybe"),
    ("REDIS_CLUSTER", "maybe"),
    ("DATABASE_URL", "mongodb://db.example/chat"),
    ("DATABASE_URL", "postgres://chat:a-database-password@db.example:notaport/chat"),
    ("DB_CONN_MAX_AGE", "abc"),
    ("DB_CONN_MAX_AGE", "-1"),
    ("MAX_MESSAGE_LENGTH", "0"),
    ("MAX_MESSAGE_LENGTH", "4k"),
    ("REDIS_URL", "http://bus:6379/0"),
    ("REDIS_URL", "redis://:a-redis-password@bus:port/0"),
    ("GATEWAY_URL", "http://chat.example.com/ws"),
    ("LOG_LEVEL", "LOUD"),
    ("LOG_FORMAT", "xml"),
    ("SECURE_SSL_REDIRECT", "sure"),
    ("SESSION_COOKIE_SECURE", "2"),
    ("CSRF_COOKIE_SECURE", "y"),
    ("SECURE_HSTS_SECONDS", "1y"),
    ("SECURE_HSTS_PRELOAD", "please"),
    ("TICKET_MAX_AGE", "1m"),
    ("TICKET_MAX_AGE", "0"),
    ("NUM_PROXIES", "-1"),
    ("THROTTLE_LOGIN_RATE", "10"),
    ("THROTTLE_LOGIN_RATE", "0/min"),
    ("THROTTLE_WRITE_RATE", "30/week"),
    ("WORKER_TTL", "0.5"),
    ("SYNC_RETENTION_DAYS", "0"),
    ("SYNC_RETENTION_DAYS", "30 days"),
    ("WORKER_TTL", "10s"),
]
# Free text: any value is a value (a key, host names, a topic name).
ANY_VALUE = {"SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "WORKER_RESPONSE_TOPIC"}


@pytest.mark.parametrize("name, value", BAD_VALUES)
def test_a_bad_value_stops_the_start_with_a_message_naming_the_setting(name, value):
    result = load(SECRET_KEY=A_SECRET_KEY, **{"DEBUG": "0", name: value})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"django.core.exceptions.ImproperlyConfigured: {name}"), result.stderr
    # A URL's password never reaches a log.
    assert "password" not in result.stderr, result.stderr


def test_every_setting_read_from_the_environment_has_a_bad_value_case():
    read = set(read_by(["project", "chat", "workers"]))
    assert read == {name for name, _ in BAD_VALUES} | ANY_VALUE, \
        "a setting read from the environment needs a case in BAD_VALUES (or ANY_VALUE, with a reason)"
