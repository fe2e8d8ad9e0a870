"""The lock files: made from the requirements files as they are now, every package pinned with its
hashes, and what every install (./scripts/run, ./scripts/test and so CI, the Docker image) uses."""

from __future__ import annotations

import re
import shutil

import pytest

from scripts import lock as locks
from scripts.stack import ROOT

LOCKS = {lock.lock: lock for lock in locks.LOCKS}


def requirement_names(source: str) -> set[str]:
    """The packages a requirements file (and those it includes) asks for by name."""
    names = set()
    for name in locks.inputs(source):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                names.add(re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group()).lower())
    return names


def entries(lock_text: str) -> list[str]:
    """Each requirement of a lock, its continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", lock_text)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", LOCKS)
def test_each_lock_was_made_from_the_requirements_files_as_they_are(name):
    source = LOCKS[name].source
    assert locks.recorded_inputs(name) == locks.inputs_digest(source), \
        f"{source} (or a file it includes) changed since {name} was made: run `{locks.COMMAND}` and commit both"


def test_a_changed_requirements_file_makes_its_lock_stale(tmp_path):
    # The check above on a copy of the project's files: an added requirement, or a changed one
    # in an included file, changes the digest the locks recorded.
    for name in ("requirements.txt", "requirements-dev.txt", *LOCKS):
        shutil.copy(ROOT / name, tmp_path / name)
    assert locks.recorded_inputs("requirements-dev.lock", tmp_path) == locks.inputs_digest("requirements-dev.txt",
                                                                                           tmp_path)
    with open(tmp_path / "requirements.txt", "a") as requirements:
        requirements.write("six>=1.16\n")
    for lock in LOCKS.values():
        assert locks.recorded_inputs(lock.lock, tmp_path) != locks.inputs_digest(lock.source, tmp_path), lock.lock


@pytest.mark.parametrize("name", LOCKS)
def test_every_locked_package_is_pinned_with_its_hashes_and_every_requirement_is_locked(name):
    text = (ROOT / name).read_text()
    for entry in entries(text):
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._\[\],-]*==[^\s;]+", entry), f"not pinned: {entry}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"no hash: {entry}"
    missing = requirement_names(LOCKS[name].source) - set(locks.pins(text))
    assert not missing, f"asked for but not in {name}: {missing}"


def test_the_development_lock_keeps_the_runtime_locks_versions():
    runtime = locks.pins((ROOT / "requirements.lock").read_text())
    dev = locks.pins((ROOT / "requirements-dev.lock").read_text())
    assert runtime.items() <= dev.items(), {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v}


def test_every_install_uses_a_lock_and_checks_the_hashes():
    assert "ensure_venv requirements.lock" in (ROOT / "scripts" / "run").read_text()
    assert "ensure_venv requirements-dev.lock" in (ROOT / "scripts" / "test").read_text()
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    installs = re.findall(r"pip install[^\n]*", bootstrap)
    assert installs and all("--require-hashes" in line for line in installs), installs
    # Reinstalled when any requirements or lock file changes.
    assert 'requirements*.txt "$ROOT"/requirements*.lock | sha256sum' in bootstrap
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert installs and all("--require-hashes" in line and "requirements.lock" in line for line in installs)
    assert re.search(r"^COPY requirements\.lock ", dockerfile, re.M)


def test_the_lock_is_resolved_for_the_images_python_and_platform():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^ARG PYTHON_IMAGE=python:{re.escape(locks.PYTHON_VERSION)}-", dockerfile, re.M)
    assert locks.PYTHON_PLATFORM == "linux"
