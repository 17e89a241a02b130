"""Podman as the container tests use it: root, runc, and the rlimits these machines allow.

Images cannot be pulled here, so the base image is a Debian bookworm made by mmdebstrap
and imported once (it is kept between test runs under BASE_IMAGE); the image under test is
built on it from the project's Containerfile, offline, with the wheels the test run made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

BASE_IMAGE = "localhost/pli-test-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,libmagic1,ca-certificates"
# crun refuses to start anything on these machines (cgroups v1 and v2 both mounted);
# runc starts containers, with rlimits no higher than these.
RUN_LIMITS = ("--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:4096")


def podman_command() -> list[str]:
    command = ["podman"]
    if shutil.which("runc"):
        command += ["--runtime", shutil.which("runc") or "runc"]
    return command


def podman(*args: str, timeout: float = 120, stdin: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*podman_command(), *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def why_podman_cannot_run() -> str | None:
    """None when podman can run a container here; otherwise the reason, for pytest.skip."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/bootstrap test installs it)"
    if os.geteuid() != 0:
        return "the container tests run podman as root, as CI does"
    if not has_image(BASE_IMAGE) and shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed to make the base image (scripts/bootstrap test)"
    return None


def has_image(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def ensure_base_image(workdir: Path) -> str:
    """A Debian bookworm base with Python and libmagic, imported from mmdebstrap's tarball
    unless an earlier run left it."""
    if has_image(BASE_IMAGE):
        return BASE_IMAGE
    tarball = workdir / "base.tar"
    done = subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",
                           "bookworm", str(tarball)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    podman("import", str(tarball), BASE_IMAGE, timeout=300)
    tarball.unlink()
    return BASE_IMAGE


def build_image(context: Path, tag: str, base: str, containerfile: str,
                ignorefile: str, build_args: Sequence[str] = ()) -> None:
    """``podman build`` in the Docker format, which keeps the HEALTHCHECK (OCI drops it)."""
    args = ["build", "--format", "docker", *RUN_LIMITS, "--build-arg", f"BASE={base}",
            "-f", containerfile, "--ignorefile", ignorefile, "-t", tag]
    for arg in build_args:
        args += ["--build-arg", arg]
    podman(*args, str(context), timeout=900)
