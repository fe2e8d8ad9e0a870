"""Resolves the requirements files into lock files with hashes, which is what every install uses.

`python -m scripts.lock` (in .venv, which has uv: requirements-dev.txt) re-resolves both locks
for Python 3.11 on Linux, the Docker image's platform and CI's:

    requirements.txt      -> requirements.lock      (./scripts/run, the Docker image)
    requirements-dev.txt  -> requirements-dev.lock  (./scripts/test, CI), at the versions of
                                                    requirements.lock for what they share

Each lock's first line records the sha256 of its inputs (the file and those it includes with
`-r`), so that a test fails when a requirements file changed and its lock did not
(tests/project/test_locks.py). Installs check every file against the lock's hashes:
`pip install --require-hashes -r requirements.lock`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "linux"
COMMAND = "python -m scripts.lock"
INPUTS_LINE = re.compile(r"^# inputs sha256: ([0-9a-f]{64}) \((.+)\)$")
INCLUDE = re.compile(r"^\s*(?:-r|--requirement)\s*=?\s*(\S+)", re.M)


@dataclass(frozen=True)
class Lock:
    source: str                        # the human-edited requirements file
    lock: str                          # what it resolves to
    constraints: str | None = None     # a lock whose versions this one keeps


LOCKS = (
    Lock("requirements.txt", "requirements.lock"),
    Lock("requirements-dev.txt", "requirements-dev.lock", constraints="requirements.lock"),
)


class LockError(RuntimeError):
    """A lock could not be made or read."""


def inputs(source: str, root: Path = ROOT) -> list[str]:
    """The requirements file and every file it includes with -r, depth first, each once."""
    seen: list[str] = []

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.append(name)
        path = root / name
        for included in INCLUDE.findall(path.read_text()):
            visit(str((path.parent / included).relative_to(root)))

    visit(source)
    return seen


def inputs_digest(source: str, root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for name in inputs(source, root):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()


def inputs_line(source: str, root: Path = ROOT) -> str:
    return f"# inputs sha256: {inputs_digest(source, root)} ({' '.join(inputs(source, root))})"


def recorded_inputs(lock: str, root: Path = ROOT) -> str | None:
    """The digest a lock's first line records, or None if it has no such line."""
    path = root / lock
    if not path.exists():
        return None
    match = INPUTS_LINE.match(path.read_text().split("\n", 1)[0])
    return match.group(1) if match else None


def pins(lock_text: str) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock (names normalized)."""
    return {re.sub(r"[-_.]+", "-", name).lower(): version
            for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)",
                                            lock_text, re.M)}


def compile_lock(lock: Lock, upgrade: bool) -> None:
    args = [sys.executable, "-m", "uv", "pip", "compile", lock.source, "--output-file", lock.lock,
            "--generate-hashes", "--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM,
            "--no-config", "--quiet", "--custom-compile-command", COMMAND]
    if lock.constraints:
        args += ["--constraint", lock.constraints]
    if upgrade:
        args.append("--upgrade")
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    if result.returncode != 0:
        raise LockError(f"uv pip compile {lock.source} failed:\n{result.stderr}")
    path = ROOT / lock.lock
    path.write_text(inputs_line(lock.source) + "\n" + path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true",
                        help="newest versions the requirements allow (default: keep the locked ones)")
    parser.add_argument("--check", action="store_true", help="only say whether every lock matches its inputs")
    args = parser.parse_args(argv)
    if args.check:
        stale = [lock.lock for lock in LOCKS if recorded_inputs(lock.lock) != inputs_digest(lock.source)]
        for name in stale:
            print(f"{name} is out of date: run {COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for lock in LOCKS:
        compile_lock(lock, args.upgrade)
        print(f"{lock.source} -> {lock.lock}: {len(pins((ROOT / lock.lock).read_text()))} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
