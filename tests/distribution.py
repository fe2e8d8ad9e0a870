"""The distribution as a release makes it, for the tests that install it: the sdist built from a copy
of the repository, the wheel from that sdist, and a fresh venv with the wheel installed."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Left out of the copy the build runs in: what a clean clone does not have.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "build", "dist", "*.egg-info",
                                    ".run", "test-artifacts", "staticfiles", "db.sqlite3*", ".pytest_cache")
BUILD_TIMEOUT = 120


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build(base: Path) -> dict[str, Path]:
    """The sdist and the wheel, in `base`/dist (the build runs in `base`/source, a copy: a build
    leaves build/ and *.egg-info where it runs)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools, the build backend, is not installed (requirements.lock brings it)")
    source, out = base / "source", base / "dist"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    out.mkdir()
    # The backend's own hook, no frontend needed; the wheel through pip without build isolation,
    # so nothing is fetched: both run offline with the setuptools of this venv.
    sdist = run(sys.executable, "-c", "import sys; from setuptools import build_meta; "
                "print(build_meta.build_sdist(sys.argv[1]))", out, cwd=source).strip().splitlines()[-1]
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "-w", out, out / sdist, cwd=base)
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return {"sdist": out / sdist, "wheel": wheels[0], "base": base}


def install(base: Path, wheel: Path) -> tuple[Path, Path]:
    """A fresh venv in `base`/venv with the wheel installed; returns its python and site-packages.
    The dependencies are this venv's (the locked versions), seen from the new one after its own
    site-packages, so that only the wheel is installed and nothing is fetched."""
    venv = base / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base).strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", wheel, cwd=base)
    return python, site
