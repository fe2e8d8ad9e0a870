"""The test suite's settings with a user model that logs in by e-mail (tests.email_users.models.User)
and a database of its own: AUTH_USER_MODEL is fixed for a process, so these run in a fresh
interpreter (tests/chat/test_user_models.py)."""

import os

from tests.settings import *  # noqa: F401,F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.email_users"]
AUTH_USER_MODEL = "email_users.User"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("EMAIL_USERS_DB", ":memory:"),
                         "TEST": {"NAME": os.environ.get("EMAIL_USERS_DB", ":memory:")}}}
