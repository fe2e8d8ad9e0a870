"""The distribution pyproject.toml builds: an sdist, and from it a wheel, holding the three packages
with their templates, static files, migrations and management commands and nothing else of the
repository; its dependencies are what the packages import. The wheel, installed into a fresh venv
and used from a directory away from this repository, sets up Django, migrates and finds its
templates and static files."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.distribution import BUILD_TIMEOUT, build, install, run
from tests.project.test_locks import requirement_names

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chat", "workers", "websockets_gateway")
# What the packages import at run time, and gunicorn, which serves the gateway.
RUNTIME = {"django", "djangorestframework", "drf-spectacular", "aiohttp", "redis", "orjson",
           "prometheus-client", "gunicorn"}
SPEEDUPS = {"uvloop", "hiredis"}
# The repository's own folders: none of them belongs in the distribution.
NOT_SHIPPED = ("project", "tests", "bench", "scripts", "deploy", "docs")
def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel built from it, as a release would make them (tests/distribution.py)."""
    return build(tmp_path_factory.mktemp("packaging"))


@pytest.fixture(scope="module")
def wheel_files(dist) -> set[str]:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        return set(wheel.namelist())


def test_the_wheel_holds_the_three_packages_with_their_data(wheel_files):
    for package in PACKAGES:
        assert f"{package}/__init__.py" in wheel_files
        sources = {str(path.relative_to(ROOT)) for path in (ROOT / package).rglob("*.py")}
        assert sources <= wheel_files, sources - wheel_files
    for data in ("chat/templates/chat/base.html", "chat/templates/chat/index.html", "chat/templates/chat/login.html",
                 "chat/static/chat/chat-client.js", "chat/static/chat/app.js", "chat/static/chat/chat.css",
                 "chat/migrations/0001_initial.py", "chat/management/commands/chat_demo.py",
                 "workers/management/commands/message_process_worker.py"):
        assert data in wheel_files, data
    shipped = {str(path.relative_to(ROOT)) for path in (ROOT / "chat").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert shipped <= wheel_files, shipped - wheel_files


def test_the_wheel_holds_nothing_else_of_the_repository(wheel_files):
    top = {name.split("/", 1)[0] for name in wheel_files}
    assert top == {*PACKAGES, "django_chat_gateway-0.1.0.dist-info"}, top
    assert "django_chat_gateway-0.1.0.dist-info/licenses/LICENSE" in wheel_files
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in wheel_files)


def test_the_sdist_holds_the_packages_and_the_project_files_but_not_the_repositorys_own_folders(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "chat/static/chat/chat-client.js",
                 "chat/templates/chat/index.html", "chat/migrations/0001_initial.py", "websockets_gateway/app.py"):
        assert name in names, name
    assert not {name.split("/", 1)[0] for name in names} & set(NOT_SHIPPED)


def test_the_dependencies_are_the_runtime_ones_and_come_from_requirements_txt(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        metadata = wheel.read("django_chat_gateway-0.1.0.dist-info/METADATA").decode()
    assert re.search(r"^Requires-Python: >=3\.11$", metadata, re.MULTILINE)
    assert re.search(r"^License-Expression: BSD-3-Clause$", metadata, re.MULTILINE)
    requirements = [Requirement(line) for line in re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)]
    required = {normalized(r.name) for r in requirements if r.marker is None}
    extras = {normalized(r.name) for r in requirements if r.marker is not None and "extra" in str(r.marker)}
    assert required == RUNTIME
    assert extras == SPEEDUPS
    assert {str(r.specifier) for r in requirements if normalized(r.name) == "django"} == {"<6,>=5.2"}
    # The repository runs and tests with what the distribution asks for, and nothing it asks for
    # is missing from the lock files.
    assert RUNTIME | SPEEDUPS <= requirement_names("requirements.txt")


def third_party_imports(package: str) -> dict[str, str]:
    """The top-level modules a package imports that are neither the standard library nor its own
    packages, each with a file that imports it."""
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".", 1)[0]
                if top not in sys.stdlib_module_names and top not in PACKAGES:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_module_the_packages_import_comes_with_a_declared_dependency():
    distributions = importlib.metadata.packages_distributions()
    for package in PACKAGES:
        for module, path in third_party_imports(package).items():
            providers = {normalized(name) for name in distributions.get(module, ())}
            assert providers & RUNTIME, f"{path} imports {module} ({providers or 'not installed'}), not a dependency"


SETTINGS = """
SECRET_KEY = "packaging-test-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
    "django.contrib.messages", "django.contrib.staticfiles",
    "rest_framework", "rest_framework.authtoken", "chat", "workers",
]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {{"context_processors": ["django.template.context_processors.request",
                                                  "django.contrib.auth.context_processors.auth"]}}}}]
ROOT_URLCONF = "host_urls"
STATIC_URL = "static/"
USE_TZ = True
"""

URLS = """
from django.urls import include, path
urlpatterns = [path("", include("chat.urls"))]
"""

# Runs in the fresh venv, from its own directory: the repository is not on sys.path.
USE = """
import json, os, sys
repository, dependencies = sys.argv[1], sys.argv[2]
# Nothing of the repository is importable: only the venv the dependencies come from may lie in it.
assert not any(entry and os.path.abspath(entry).startswith(repository)
               and not os.path.abspath(entry).startswith(dependencies) for entry in sys.path), sys.path

import chat, workers, websockets_gateway
import websockets_gateway.protocol, websockets_gateway.wire, websockets_gateway.app  # no Django settings needed

os.environ["DJANGO_SETTINGS_MODULE"] = "host_settings"
import django
django.setup()
from django.apps import apps
from django.contrib.staticfiles import finders
from django.core.management import call_command, get_commands
from django.db import connection
from django.template.loader import get_template
from django.urls import reverse
from workers.actions import registry

call_command("migrate", verbosity=0)
print(json.dumps({
    "files": {name: module.__file__ for name, module in
              (("chat", chat), ("workers", workers), ("websockets_gateway", websockets_gateway))},
    "templates": [get_template(name).origin.name for name in ("chat/index.html", "chat/login.html")],
    "static": finders.find("chat/chat-client.js"),
    "models": [model._meta.db_table for model in apps.get_app_config("chat").get_models()],
    "tables": connection.introspection.table_names(),
    "commands": {name: app for name, app in get_commands().items() if app in ("chat", "workers")},
    "actions": sorted(registry.catalogue()["actions"]),
    "index": reverse("chat:index"),
}))
"""


def test_the_wheel_installs_and_runs_in_a_project_of_its_own(dist):
    base = dist["base"]
    host = base / "host"
    host.mkdir()
    python, site = install(base, dist["wheel"])
    check = subprocess.run([python, "-m", "pip", "check", "--disable-pip-version-check"], cwd=base,
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    unmet = [line for line in check.stdout.splitlines() if line.lower().startswith("django-chat-gateway")]
    assert not unmet, unmet

    (host / "host_settings.py").write_text(SETTINGS.format(database=str(host / "db.sqlite3")))
    (host / "host_urls.py").write_text(URLS)
    (host / "use.py").write_text(textwrap.dedent(USE))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(host), "LANG": "C.UTF-8"}
    found = json.loads(run(python, "use.py", str(ROOT), sys.prefix, cwd=host, env=env).strip().splitlines()[-1])

    for package, path in found["files"].items():
        assert Path(path) == site / package / "__init__.py", (package, path)
    assert found["templates"] == [str(site / "chat" / "templates" / "chat" / name)
                                  for name in ("index.html", "login.html")]
    assert found["static"] == str(site / "chat" / "static" / "chat" / "chat-client.js")
    assert found["models"] and set(found["models"]) <= set(found["tables"]), found  # migrated
    assert found["commands"] == {"chat_demo": "chat", "chat_fixtures": "chat", "prune_changes": "chat",
                                 "message_process_worker": "workers"}
    assert {"authenticate", "new_message", "sync"} <= set(found["actions"])
    assert found["index"] == "/"
