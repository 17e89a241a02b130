"""Pli as a practice installs it: a wheel built from the project, and the wheels of its
dependencies beside it, so that a fresh virtual environment (or a container image) can
install it with ``pip install --no-index``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a build of the project must not see: a stale build/ folder would slip old modules
# into the wheel, and the rest is not part of the source.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                    "test-artifacts", "demo", ".pytest_cache", ".hypothesis")


@dataclass(frozen=True)
class Wheelhouse:
    folder: Path  # pli-*.whl and every dependency's wheel

    @property
    def pli(self) -> Path:
        [wheel] = self.folder.glob("pli-*.whl")
        return wheel


def run(command: list[str], *, timeout: float, cwd: Path | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-4000:]}"
    return done.stdout


def build_wheelhouse(folder: Path) -> Wheelhouse:
    """Build Pli's wheel from a clean copy of the source, then fetch its dependencies as
    wheels (pip's cache makes the second run quick)."""
    source = folder.parent / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    shutil.rmtree(source / "tests")
    folder.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder), str(source)],
        timeout=300)
    house = Wheelhouse(folder)
    run([*pip, "wheel", "--quiet", "--wheel-dir", str(folder), str(house.pli)], timeout=600)
    return house


def fresh_venv(where: Path, house: Wheelhouse) -> Path:
    """A new virtual environment with Pli's wheel installed, from the wheelhouse only;
    returns its bin/ folder."""
    venv.create(where, with_pip=True, symlinks=True)
    bin_dir = where / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--disable-pip-version-check", "--find-links", str(house.folder), str(house.pli)],
        timeout=600)
    return bin_dir
