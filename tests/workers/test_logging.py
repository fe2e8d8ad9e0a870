"""The workers' (and the web part's) logging comes from Django's LOGGING: LOG_FORMAT picks text or JSON lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from scripts.stack import ROOT

LOG_A_LINE = (
    "import django, logging; django.setup(); "
    "logging.getLogger('workers.consumer').info('request handled', extra={'request_id': 'gw-1:7', "
    "'action': 'new_message', 'status': 'success', 'duration_ms': 2.5}); "
    "logging.getLogger('django.db.backends').info('not shown: below WARNING')"
)


def log_in_a_fresh_process(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "LOG_LEVEL")}
    clean.update(env, DJANGO_SETTINGS_MODULE="project.settings")
    return subprocess.run([sys.executable, "-c", LOG_A_LINE], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=60)


def test_log_format_json_gives_one_json_object_a_line_with_the_context():
    result = log_in_a_fresh_process(LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    entry = json.loads(line)
    assert {key: entry[key] for key in ("level", "logger", "message", "request_id", "action", "status",
                                        "duration_ms")} == {
        "level": "INFO", "logger": "workers.consumer", "message": "request handled", "request_id": "gw-1:7",
        "action": "new_message", "status": "success", "duration_ms": 2.5}
    assert entry["time"] and isinstance(entry["process"], int)


def test_the_default_is_text_with_the_request_id_before_the_message():
    result = log_in_a_fresh_process()
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert re.fullmatch(r"\S+ \S+ INFO workers\.consumer \d+ request=gw-1:7 request handled action=new_message "
                        r"status=success duration_ms=2\.5", line), line


def test_an_unknown_log_format_is_refused_at_start():
    result = log_in_a_fresh_process(LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT" in result.stderr
