"""The systemd unit: systemd's own checker, its security review, the hardening it claims,
and the MemoryDenyWriteExecute rule applied to the real program."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "pli.service"
SYSUSERS = ROOT / "deploy" / "systemd" / "pli.sysusers"
INSTALLED_PLI = "/opt/pli/.venv/bin/pli"
# The exposure score deploy/README.md states; a change to the unit that worsens it fails.
MAX_EXPOSURE = 1.4

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; keys may repeat, as systemd allows."""
    out, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def service() -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for section, key, value in directives(UNIT.read_text()):
        if section == "Service":
            got.setdefault(key, []).append(value)
    return got


def local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's pli: verify insists that the
    program exists, and /opt/pli is where an installation puts it, not a test machine."""
    pli = Path(sys.executable).with_name("pli")
    if not pli.exists():
        pytest.skip(f"{pli} is missing: install the project in its venv (pip install -e .)")
    text = UNIT.read_text() if text is None else text
    assert INSTALLED_PLI in text
    copy = tmp_path / "pli.service"
    copy.write_text(text.replace(INSTALLED_PLI, str(pli)))
    return copy


def verify(unit: Path) -> tuple[int, list[str]]:
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "verify", str(unit)], check=False, capture_output=True, text=True,
                          timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in lines if unit.name in line or str(unit) in line]


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    code, complaints = verify(local_copy(tmp_path))
    assert code == 0 and complaints == []


@needs_analyze
@pytest.mark.parametrize("name", ["pli-lists-update.service", "pli-lists-update.timer"])
def test_the_whitelist_update_units_pass_systemd_analyze_verify(tmp_path: Path,
                                                                name: str) -> None:
    pli = Path(sys.executable).with_name("pli")
    for unit in ("pli.service", "pli-lists-update.service", "pli-lists-update.timer"):
        text = (UNIT.parent / unit).read_text().replace(INSTALLED_PLI, str(pli))
        (tmp_path / unit).write_text(text)
    code, complaints = verify(tmp_path / name)
    assert code == 0 and complaints == []


def test_the_whitelist_timer_runs_weekly_and_the_update_reloads_pli() -> None:
    timer = {k: v for s, k, v in directives((UNIT.parent / "pli-lists-update.timer").read_text())
             if s == "Timer"}
    assert timer["OnCalendar"] == "weekly" and timer["Persistent"] == "true"
    update = {k: v for s, k, v in
              directives((UNIT.parent / "pli-lists-update.service").read_text())
              if s == "Service"}
    assert update["ExecStart"] == f"{INSTALLED_PLI} lists update -c /etc/pli/pli.toml"
    assert update["ExecStartPost"].endswith("systemctl try-reload-or-restart pli.service")
    assert update["User"] == "pli" and update["ReadWritePaths"] == "/etc/pli/lists"


@needs_analyze
def test_verify_would_notice_a_mistake(tmp_path: Path) -> None:
    """verify only warns about a bad value; the test above therefore demands silence."""
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=stricter")
    _, complaints = verify(local_copy(tmp_path, broken))
    assert any("ProtectSystem" in line or "protect system" in line for line in complaints)


@needs_analyze
def test_security_exposure_stays_at_the_documented_score(tmp_path: Path) -> None:
    assert ANALYZE is not None
    unit = local_copy(tmp_path)
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
                          check=False, capture_output=True, text=True, timeout=60)
    if "--offline" in done.stderr and done.returncode != 0:
        pytest.skip("this systemd-analyze has no --offline review (systemd < 250)")
    match = re.search(r"Overall exposure level for pli\.service: ([0-9.]+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    assert float(match[1]) <= MAX_EXPOSURE
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert f"exposure level for pli.service: {match[1]}" in readme


def test_unit_says_what_the_issue_asks() -> None:
    s = service()
    one = {key: values[-1] for key, values in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["WatchdogSec"]
    assert one["ExecStart"] == f"{INSTALLED_PLI} run -c /etc/pli/pli.toml"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["User"] == "pli"
    assert one["UMask"] == "0077"
    assert one["LoadCredential"] == "upstream:/etc/pli/upstream-password"
    assert one["ReadWritePaths"] == "/var/lib/pli"
    assert one["StateDirectory"] == "pli"
    assert one["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert one["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert one["ProtectSystem"] == "strict"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "RestrictNamespaces", "LockPersonality",
                "RestrictRealtime", "RestrictSUIDSGID", "MemoryDenyWriteExecute"):
        assert one[key] == "yes", key
    # The graceful stop (10 s for sessions, 10 s for deliveries) fits in the stop timeout.
    assert int(one["TimeoutStopSec"].rstrip("s")) >= 30


def test_pli_run_accepts_the_units_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--help"],
                          check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)
    if done.returncode != 0 or "-c" not in done.stdout:
        code = "import sys; from gateway.cli import main; sys.exit(main(['run', '--help']))"
        done = subprocess.run([sys.executable, "-c", code],
                              check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and "--config" in done.stdout


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                    reason="systemd-sysusers is not installed (apt-get install systemd)")
def test_sysusers_creates_a_system_user_without_a_shell(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    done = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [entry] = [line for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
               if line.startswith("pli:")]
    _, _, uid, _, _, home, shell = entry.split(":")
    assert int(uid) < 1000 and home == "/var/lib/pli" and shell.endswith("nologin")


@pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None,
                    reason="aiohttp is not installed (pip install -e .)")
def test_the_program_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """What MemoryDenyWriteExecute=yes allows: libmagic, cryptography, TLS, scrypt, a
    ctypes callback (libffi closures), aiohttp and the whole gateway import graph."""
    code = f"""
import asyncio, ctypes, hashlib, os, pathlib
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
assert callback(41) == 42
import magic
assert magic.from_buffer(b"%PDF-1.4\\n%", mime=True) == "application/pdf"
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key = AESGCM.generate_key(bit_length=256)
assert AESGCM(key).decrypt(b"n" * 12, AESGCM(key).encrypt(b"n" * 12, b"x", None), None) == b"x"
hashlib.scrypt(b"pw", salt=b"s" * 16, n=2**14, r=8, p=1)
import gateway.app, gateway.cli, gateway.metrics, gateway.sdnotify
from gateway.tls import server_context, write_self_signed
folder = pathlib.Path({str(tmp_path)!r})
write_self_signed(folder / "c.pem", folder / "k.pem", "localhost")
server_context(folder / "c.pem", folder / "k.pem")
from gateway.metrics import Metrics, build_metrics_app, start_metrics
async def serve():
    runner = await start_metrics("127.0.0.1", 0, build_metrics_app(Metrics(), lambda: (True, "ok")))
    host, port = runner.addresses[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.0\\r\\n\\r\\n")
    answer = await reader.read()
    writer.close()
    await runner.cleanup()
    assert answer.split(b" ")[1] == b"200", answer
asyncio.run(asyncio.wait_for(serve(), 20))
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("refused as systemd would")
"""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("mdwe.py")), "-c", code],
                          check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)
    if done.returncode == 77:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stderr[-3000:]
    # The rule was really in force: the writable and executable mapping was refused.
    assert done.stdout.strip() == "refused as systemd would"
