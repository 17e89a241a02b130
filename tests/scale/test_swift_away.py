"""Pli starts while its Swift is away: it says so in the log, and mail that needs no vault
still flows (no Swift needed for this test: nothing listens where pli.toml points)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

from structlog.testing import capture_logs

from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    LoopThread,
    Provider,
    RunningApp,
    free_port,
    make_gateway,
    wait_until,
)


def test_pli_starts_without_its_swift_and_passed_mail_flows(tmp_path: Path,
                                                            loop: LoopThread) -> None:
    (tmp_path / "swift-key").write_text("k\n")
    gw = make_gateway(tmp_path / "pli", extra=(
        f'\n[vault]\nobjects = "swift"\n\n[vault.swift]\n'
        f'auth_url = "http://127.0.0.1:{free_port()}/auth/v1.0"\nuser = "a:b"\n'
        f'key_file = "{tmp_path / "swift-key"}"\ncontainer = "pli-away"\ntimeout = 2\n'))
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    running = RunningApp(loop, gw)
    try:
        with capture_logs() as logged:
            running.start()
            try:
                message = EmailMessage()
                message["From"] = ADDRESS
                message["To"] = "dr.durand@cabinet-martin.fr"
                message["Subject"] = "Planning"
                message.set_content("Bonjour")
                with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
                    client.starttls(context=gw.client_context())
                    client.login(USER, PASSWORD)
                    client.send_message(message)  # the relay policy passes it
                wait_until(lambda: len(provider.received) == 1)
                wait_until(lambda: any(e["event"] == "vault.objects_unavailable"
                                       for e in logged))
            finally:
                running.stop()
    finally:
        provider.stop()
    [away] = [e for e in logged if e["event"] == "vault.objects_unavailable"]
    assert away["objects"] == "swift"
    assert "Swift at 127.0.0.1 cannot be reached for a login" in away["problem"]
    assert [e for e in logged if e["event"] == "vault.purge_failed"]  # tried again hourly
