"""An error no step expected becomes 451 4.3.0 and a sentence: the client keeps the
message and tries again; the log names the error's type, never its text (which may quote
the message)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import gateway.pipeline
from tests.intake.test_submission import message
from tests.support import ADDRESS, HOST, PASSWORD, USER, LoopThread, RunningApp, make_gateway


class Unexpected(Exception):
    pass


def test_an_unexpected_error_gets_451_4_3_0_and_the_log_its_type_only(
        tmp_path: Path, loop: LoopThread, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = make_gateway(tmp_path / "pli")

    async def broken(_job: object) -> None:
        raise Unexpected("Résultats de biopsie de Mme Dupont")

    monkeypatch.setattr(gateway.pipeline, "check_sender", broken)  # the first step
    running = RunningApp(loop, gw).start()
    try:
        with capture_logs() as logs:
            with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
                client.starttls(context=gw.client_context())
                client.login(USER, PASSWORD)
                client.mail(ADDRESS)
                client.rcpt("dr.durand@cabinet-martin.fr")
                code, text = client.data(message(to="dr.durand@cabinet-martin.fr"))
    finally:
        running.stop()
    assert code == 451 and text.startswith(b"4.3.0 Pli n'a pas pu prendre ce message"), text
    assert b" / Pli could not take this message" in text
    errors = [e for e in logs if e["event"] == "session.internal_error"]
    assert [e["error"] for e in errors] == ["Unexpected"]
    assert not any("biopsie" in str(e) for e in logs)
