"""`chat.conf`: the one CHAT dict, its defaults, and the clear error a wrong key or value gets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from chat.conf import KEYS, chat_settings, check

ROOT = Path(__file__).resolve().parents[2]


def test_every_key_is_optional_with_its_default(monkeypatch):
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)
    monkeypatch.delenv("SYNC_RETENTION_DAYS", raising=False)
    assert check({}) == {name: key.default for name, key in KEYS.items()}
    assert check({"MAX_MESSAGE_LENGTH": 10})["MAX_MESSAGE_LENGTH"] == 10


@pytest.mark.parametrize("configured, named", [
    ({"REDIS": "redis://x"}, "unknown keys ['REDIS']"),
    ({"MAX_MESSAGE_LENGTH": 0}, "CHAT['MAX_MESSAGE_LENGTH'] must be an integer >= 1"),
    ({"MAX_MESSAGE_LENGTH": "4000"}, "CHAT['MAX_MESSAGE_LENGTH'] must be an integer >= 1"),
    ({"TICKET_MAX_AGE": True}, "CHAT['TICKET_MAX_AGE'] must be an integer >= 1"),
    ({"REDIS_URL": "http://bus:6379/0"}, "CHAT['REDIS_URL'] must be a URL of scheme redis, rediss, unix"),
    ({"GATEWAY_URL": "http://chat.example/ws"}, "CHAT['GATEWAY_URL'] must be a URL of scheme ws, wss"),
    ({"WORKER_TTL": 0.5}, "CHAT['WORKER_TTL'] must be a number of seconds >= 1"),
    ({"WORKER_TTL": float("inf")}, "CHAT['WORKER_TTL'] must be a number of seconds >= 1"),
    ({"WORKER_RESPONSE_TOPIC": ""}, "CHAT['WORKER_RESPONSE_TOPIC'] must be a non-empty string"),
    ({"SYNC_RETENTION_DAYS": 0}, "CHAT['SYNC_RETENTION_DAYS'] must be a whole number of days >= 1"),
    ({"SYNC_RETENTION_DAYS": 1.5}, "CHAT['SYNC_RETENTION_DAYS'] must be a whole number of days >= 1"),
    (["REDIS_URL"], "CHAT must be a dict"),
])
def test_a_wrong_key_or_value_is_named(configured, named):
    with pytest.raises(ImproperlyConfigured, match=named.replace("[", r"\[").replace("]", r"\]")):
        check(configured)


def test_an_empty_gateway_url_means_the_pages_host():
    assert check({"GATEWAY_URL": ""})["GATEWAY_URL"] == ""


def test_the_settings_are_read_again_when_changed(settings):
    settings.CHAT = {**settings.CHAT, "MAX_MESSAGE_LENGTH": 7}
    assert chat_settings.MAX_MESSAGE_LENGTH == 7
    settings.CHAT = {}
    assert chat_settings.MAX_MESSAGE_LENGTH == 4000
    with pytest.raises(AttributeError):
        chat_settings.NO_SUCH_KEY


def test_a_project_with_a_wrong_chat_setting_does_not_start(tmp_path):
    # The check runs when the app starts (ChatConfig.ready), in a fresh interpreter.
    (tmp_path / "bad_settings.py").write_text("from tests.settings import *  # noqa\nCHAT = {'MAX_LENGTH': 5}\n")
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True,
                            env={"PATH": "", "PYTHONPATH": f"{tmp_path}:{ROOT}",
                                 "DJANGO_SETTINGS_MODULE": "bad_settings"}, timeout=60)
    assert result.returncode != 0
    assert "CHAT has unknown keys ['MAX_LENGTH']" in result.stderr


def test_docs_integrate_lists_every_key_with_its_default():
    text = (ROOT / "docs" / "integrate.md").read_text()
    section = text[text.index("### The chat settings"):]
    rows = {name: default for name, default in re.findall(r"^\| `([A-Z_]+)` \| `(.*?)` \|", section, re.M)}
    assert rows == {name: json.dumps(key.default) for name, key in KEYS.items()}


@pytest.mark.parametrize("environment, unset", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_redis_cluster_unset_is_the_environments_and_set_wins(monkeypatch, environment, unset):
    monkeypatch.setenv("REDIS_CLUSTER", environment)
    assert check({})["REDIS_CLUSTER"] is unset
    assert check({"REDIS_CLUSTER": not unset})["REDIS_CLUSTER"] is (not unset)


def test_redis_cluster_must_be_a_bool_and_a_bad_environment_is_named(monkeypatch):
    with pytest.raises(ImproperlyConfigured, match=r"CHAT\['REDIS_CLUSTER'\] must be True or False, not 'yes'"):
        check({"REDIS_CLUSTER": "yes"})
    monkeypatch.setenv("REDIS_CLUSTER", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"CHAT\['REDIS_CLUSTER'\] is not set and REDIS_CLUSTER='maybe'"):
        check({})


@pytest.mark.parametrize("environment, unset", [("7", 7), (" 90 ", 90), ("", 30)])
def test_sync_retention_days_unset_is_the_environments_and_set_wins(monkeypatch, environment, unset):
    monkeypatch.setenv("SYNC_RETENTION_DAYS", environment)
    assert check({})["SYNC_RETENTION_DAYS"] == unset
    assert check({"SYNC_RETENTION_DAYS": 3})["SYNC_RETENTION_DAYS"] == 3


@pytest.mark.parametrize("environment", ["0", "-1", "1.5", "a month"])
def test_a_bad_sync_retention_days_in_the_environment_is_named(monkeypatch, environment):
    monkeypatch.setenv("SYNC_RETENTION_DAYS", environment)
    with pytest.raises(ImproperlyConfigured, match=r"CHAT\['SYNC_RETENTION_DAYS'\] is not set and "
                                                   r"SYNC_RETENTION_DAYS=.* is not a whole number of days >= 1"):
        check({})
