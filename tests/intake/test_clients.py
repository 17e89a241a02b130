"""The command-line clients practices and scripts actually use: swaks and msmtp."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.spool.helpers import queued
from tests.support import ADDRESS, HOST, PASSWORD, USER, Gateway, Provider, RunningApp, wait_until

pytestmark = pytest.mark.skipif(
    not (shutil.which("swaks") and shutil.which("msmtp")),
    reason="swaks and msmtp come with `make test` (scripts/bootstrap test)",
)


def swaks(gw: Gateway, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--server", HOST, "--from", ADDRESS, "--to", "patient@example.org",
         "--tls-ca-path", str(gw.cert), "--helo", "[192.0.2.1]", "--timeout", "10", *extra],
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_with_starttls_and_auth_delivers(
        gw: Gateway, provider: Provider, pli: RunningApp, mechanism: str) -> None:
    result = swaks(gw, "--port", str(gw.submission_port), "--tls", "--auth", mechanism,
                   "--auth-user", USER, "--auth-password", PASSWORD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Queued as" in result.stdout
    got = wait_until(lambda: provider.received)
    assert got[0].rcpt_tos == ["patient@example.org"]


def test_swaks_with_implicit_tls_and_auth_delivers(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    result = swaks(gw, "--port", str(gw.submissions_port), "--tlsc", "--auth", "LOGIN",
                   "--auth-user", USER, "--auth-password", PASSWORD)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: provider.received)


def test_swaks_without_auth_is_refused_and_nothing_is_relayed(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    result = swaks(gw, "--port", str(gw.submission_port), "--tls")
    assert result.returncode != 0
    assert "530 5.7.0" in result.stdout
    assert provider.received == []
    assert queued(gw) == []  # nor will it be: nothing was queued


def test_msmtp_with_starttls_and_auth_delivers(
        tmp_path: Path, gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    rc = tmp_path / "msmtprc"
    rc.write_text(
        f"account pli\nhost {HOST}\nport {gw.submission_port}\ntls on\ntls_starttls on\n"
        f"tls_trust_file {gw.cert}\nauth on\nuser {USER}\npassword {PASSWORD}\n"
        f"from {ADDRESS}\ndomain [192.0.2.1]\ntimeout 10\n")
    rc.chmod(0o600)
    mail = (f"From: {ADDRESS}\nTo: patient@example.org\nSubject: Rendez-vous\n\n"
            "Bonjour,\nvotre rendez-vous est confirmé.\n")
    result = subprocess.run(["msmtp", "-C", str(rc), "-a", "pli", "patient@example.org"],
                            input=mail.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    got = wait_until(lambda: provider.received)
    assert "votre rendez-vous est confirmé".encode() in got[0].content


def test_msmtp_as_a_foreign_sender_is_refused(
        tmp_path: Path, gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    rc = tmp_path / "msmtprc"
    rc.write_text(
        f"account pli\nhost {HOST}\nport {gw.submission_port}\ntls on\ntls_starttls on\n"
        f"tls_trust_file {gw.cert}\nauth on\nuser {USER}\npassword {PASSWORD}\n"
        "from someone.else@cabinet-martin.fr\ntimeout 10\n")
    rc.chmod(0o600)
    result = subprocess.run(["msmtp", "-C", str(rc), "-a", "pli", "patient@example.org"],
                            input=b"Subject: x\n\nx\n", capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"someone.else@cabinet-martin.fr" in result.stderr
    assert provider.received == []
