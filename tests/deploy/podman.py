"""Podman as the container tests use it: root, runc, and the rlimits these machines allow.

Images cannot be pulled here, so the base image is a Debian bookworm made by mmdebstrap
and imported once (kept between test runs, tagged by its package list); the image under test is
built on it from the project's Containerfile, offline, with the wheels the test run made.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

BASE_PACKAGES = "python3,python3-venv,libmagic1,ca-certificates"
# The same with systemd as PID 1, D-Bus for systemctl and systemd-analyze, and procps
# for the unit's /bin/kill (any Debian but the minimal base has it).
SYSTEMD_PACKAGES = BASE_PACKAGES + ",systemd,systemd-sysv,dbus,procps"


def image_name(kind: str, packages: str) -> str:
    """A tag that changes with the package list, so a kept image is never stale."""
    return f"localhost/pli-test-{kind}:bookworm-{hashlib.sha256(packages.encode()).hexdigest()[:12]}"


BASE_IMAGE = image_name("base", BASE_PACKAGES)
SYSTEMD_IMAGE = image_name("systemd", SYSTEMD_PACKAGES)
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


def ensure_base_image(workdir: Path, name: str = BASE_IMAGE,
                      packages: str = BASE_PACKAGES) -> str:
    """A Debian bookworm image with ``packages``, imported from mmdebstrap's tarball
    unless an earlier run left it."""
    if has_image(name):
        return name
    tarball = workdir / "base.tar"
    done = subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={packages}",
                           "bookworm", str(tarball)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    podman("import", str(tarball), name, timeout=300)
    tarball.unlink()
    return name


def dangling() -> set[str]:
    return set(podman("images", "--quiet", "--filter", "dangling=true").stdout.split())


def build_image(context: Path, tag: str, base: str, containerfile: str,
                ignorefile: str, build_args: Sequence[str] = ()) -> set[str]:
    """``podman build`` in the Docker format, which keeps the HEALTHCHECK (OCI drops it).
    Returns the untagged images the build left (its first stage), for the caller to
    remove with the image."""
    before = dangling()
    args = ["build", "--format", "docker", *RUN_LIMITS, "--build-arg", f"BASE={base}",
            "-f", containerfile, "--ignorefile", ignorefile, "-t", tag]
    for arg in build_args:
        args += ["--build-arg", arg]
    podman(*args, str(context), timeout=900)
    return dangling() - before
