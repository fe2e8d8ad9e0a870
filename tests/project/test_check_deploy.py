"""`manage.py check --deploy` passes with the production settings docs/deployment.md recommends.

Each run is a fresh interpreter with its own environment, since project/settings.py reads the
environment once, at import.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from scripts.stack import ROOT

# What docs/deployment.md's security checklist sets: DEBUG off, a long random key, the real host
# names, and HTTPS at the load balancer (the redirect, secure cookies and HSTS, which
# project/settings.py turns on by default when DEBUG is off; spelled out here as a deployment
# would, so that a change of those defaults shows up in this test).
PRODUCTION = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "chat.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_PRELOAD": "1",
}

# Settings of the environment this test runs in that would change what is checked.
CLEARED = {"DATABASE_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SECURE_SSL_REDIRECT",
           "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD"}


def check_deploy(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in CLEARED}
    clean.update(env, DJANGO_SETTINGS_MODULE="project.settings")
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


def a_secret_key() -> str:
    # Django's W009 wants at least 50 characters and 5 distinct ones; token_urlsafe(50) gives 67.
    return secrets.token_urlsafe(50)


def test_check_deploy_passes_with_the_production_settings():
    result = check_deploy(**PRODUCTION, SECRET_KEY=a_secret_key())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_the_secure_defaults_alone_leave_only_the_hsts_preload_choice():
    """With DEBUG off and nothing else said, the settings are already secure; preloading HSTS is
    a commitment for the whole domain (and its subdomains), so it stays off until asked for, and
    is the one warning left."""
    result = check_deploy(DEBUG="0", ALLOWED_HOSTS="chat.example.com", SECRET_KEY=a_secret_key())
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "security.W021" in output and "identified 1 issue" in output, output


def test_plain_http_settings_are_what_check_deploy_reports():
    """The compose file's defaults for a first run on http://localhost are not a production
    setting: check --deploy names each of them."""
    result = check_deploy(**{**PRODUCTION, "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0",
                             "CSRF_COOKIE_SECURE": "0"}, SECRET_KEY=a_secret_key())
    output = result.stdout + result.stderr
    assert result.returncode == 1
    for check in ("security.W008", "security.W012", "security.W016"):
        assert check in output, output


def test_a_short_secret_key_is_reported():
    result = check_deploy(**PRODUCTION, SECRET_KEY="short-but-not-the-dev-key")
    assert result.returncode == 1
    assert "security.W009" in result.stdout + result.stderr
