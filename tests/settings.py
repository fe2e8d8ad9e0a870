"""The test suite's settings: the project's, in development mode.

DEBUG is off unless asked for, and the development SECRET_KEY is refused without it; the suite
asks for it here, in the environment, before project.settings reads it, so that the processes the
tests start (workers, the web server: they inherit the environment and this settings module) run
as `./scripts/run` runs them. Tests of other settings start fresh interpreters with their own.
"""

import os

os.environ["DEBUG"] = "1"

from project.settings import *  # noqa: E402,F401,F403
from project.settings import INSTALLED_APPS  # noqa: E402

# A host project's app with actions of its own (tests/example_app/chat_actions.py).
INSTALLED_APPS = [*INSTALLED_APPS, "tests.example_app"]
