"""The container files. No container engine runs here, so: the Containerfile's key lines,
the compose file's structure (with PyYAML or docker-compose when present), and the
health check's own command run against a real /healthz."""

from __future__ import annotations

import ast
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics import DEFAULT_PORT, Metrics, build_metrics_app, start_metrics
from tests.support import LoopThread

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "deploy" / "container"
CONTAINERFILE = FOLDER / "Containerfile"
COMPOSE = FOLDER / "compose.yaml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "the Containerfile ends inside a continued line"
    return out


def first(keyword: str) -> str:
    found = [args for key, args in instructions() if key == keyword]
    assert found, f"no {keyword} in the Containerfile"
    return found[-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def test_base_image_is_a_build_argument_and_libmagic_is_installed_if_missing() -> None:
    assert instructions()[0] == ("ARG", "BASE=python:3.11-slim")
    assert [args for key, args in instructions() if key == "FROM"] == ["${BASE} AS wheel",
                                                                         "${BASE}"]
    runs = " ".join(args for key, args in instructions() if key == "RUN")
    assert "libmagic1" in runs and "--no-install-recommends" in runs


def test_runs_as_a_non_root_user() -> None:
    user = first("USER")
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))


def test_entrypoint_is_pli_run_with_the_config_volume() -> None:
    command = exec_form(first("ENTRYPOINT")) + exec_form(first("CMD"))
    assert command == ["pli", "run", "-c", "/etc/pli/pli.toml"]
    volumes = exec_form(first("VOLUME"))
    assert volumes == ["/etc/pli", "/var/lib/pli"]


def test_exposes_smtp_and_portal_ports() -> None:
    assert first("EXPOSE").split() == ["587", "465", "8080"]


def test_every_copied_path_exists_in_the_project() -> None:
    for key, args in instructions():
        if key == "COPY" and not args.startswith("--from="):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the project"
    ignore = (FOLDER / "Containerfile.dockerignore").read_text()
    for needed in ("!pyproject.toml", "!README.md", "!gateway/**", "!deploy/container/wheels/**"):
        assert needed in ignore


def healthcheck_command() -> list[str]:
    args = first("HEALTHCHECK")
    options, _, command = args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return exec_form(command)


def test_health_check_asks_healthz_on_the_metrics_port() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    ast.parse(command[2])
    assert f"http://127.0.0.1:{DEFAULT_PORT}/healthz" in command[2]


@pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None,
                    reason="aiohttp is not installed (pip install -e .)")
@pytest.mark.parametrize("healthy", [True, False])
def test_health_check_command_follows_healthz(loop: LoopThread, healthy: bool) -> None:
    """The HEALTHCHECK's own command, pointed at a real metrics listener on a free port."""
    reason = "ok" if healthy else "spool not writable: No space left on device"
    app = build_metrics_app(Metrics(), lambda: (healthy, reason))
    runner = loop.run(start_metrics("127.0.0.1", 0, app))
    try:
        port = runner.addresses[0][1]
        code = healthcheck_command()[2].replace(f":{DEFAULT_PORT}/", f":{port}/")
        done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=30)
        assert (done.returncode == 0) is healthy
    finally:
        loop.run(runner.cleanup())


# -- compose.yaml ---------------------------------------------------------------------


def test_compose_key_lines() -> None:
    text = COMPOSE.read_text()
    for line in ('- "587:587"', '- "465:465"', '- "127.0.0.1:8080:8080"',
                 "- ./config:/etc/pli", "- ./data:/var/lib/pli",
                 "dockerfile: deploy/container/Containerfile", "read_only: true",
                 "no-new-privileges:true"):
        assert line in text, line


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_structure() -> None:
    service = compose()["services"]["pli"]
    assert (ROOT / "deploy" / "container" / service["build"]["context"]).resolve() == ROOT
    assert service["build"]["dockerfile"] == "deploy/container/Containerfile"
    assert service["command"] == ["run", "-c", "/etc/pli/pli.toml"]
    assert not str(service["user"]).startswith(("0", "root"))
    assert {v.split(":")[1] for v in service["volumes"]} == {"/etc/pli", "/var/lib/pli"}
    assert set(service["ports"]) == {"587:587", "465:465", "127.0.0.1:8080:8080"}
    assert service["cap_drop"] == ["ALL"]
    assert service["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == 0
    assert service["read_only"] is True and service["init"] is True


def test_compose_validates_with_docker_compose(tmp_path: Path) -> None:
    """docker-compose v1 checks the file against the compose schema without an engine."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    done = subprocess.run([tool, "-f", str(COMPOSE), "config"],
                          check=False, capture_output=True, text=True, timeout=60, cwd=FOLDER,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    # The base image is a build argument, python:3.11-slim unless PLI_BASE says otherwise.
    assert "BASE: python:3.11-slim" in done.stdout
