"""Postfix's smtp-sink as the provider: a real MTA's answers, soft refusals, 421 and dropped
connections, then the same port served normally again."""

from __future__ import annotations

import shutil
import smtplib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.spool.helpers import (
    PATIENT,
    message,
    parse_dsn,
    stays,
    submit,
    wait_deferred,
    wait_queue_empty,
)
from tests.support import ADDRESS, HOST, PASSWORD, USER, Gateway, RunningApp, SmtpSink, wait_until

pytestmark = pytest.mark.skipif(SmtpSink.binary() is None,
                                reason="Postfix's smtp-sink is not installed (make test)")


@pytest.fixture
def dumps() -> Iterator[Path]:
    """smtp-sink writes its dumps as "nobody", who cannot enter pytest's private tmp_path."""
    folder = Path(tempfile.mkdtemp(prefix="pli-sink-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sinks() -> Iterator[list[SmtpSink]]:
    started: list[SmtpSink] = []
    yield started
    for sink in started:
        sink.stop()


def start_sink(sinks: list[SmtpSink], port: int, dump: Path, *options: str) -> SmtpSink:
    sink = SmtpSink(port, options, dump_dir=dump).start()
    sinks.append(sink)
    return sink


def dumped_to(sink: SmtpSink, recipient: str) -> list[bytes]:
    return [d for d in sink.dumped() if f"X-Rcpt-Args: <{recipient}>".encode() in d]


def test_smtp_sink_accepts_the_relayed_message(
        dumps: Path, gw: Gateway, sinks: list[SmtpSink], pli: RunningApp) -> None:
    sink = start_sink(sinks, gw.provider_port, dumps / "dump")
    submit(gw)
    got = wait_until(lambda: dumped_to(sink, PATIENT), timeout=10)
    wait_queue_empty(gw)
    assert f"X-Mail-Args: <{ADDRESS}>".encode() in got[0]
    assert b"Subject: Rendez-vous" in got[0]
    assert len(sink.dumped()) == 1


@pytest.mark.parametrize("failure, answer", [
    (("-r", "RCPT"), "450 4.3.0"),                 # a soft refusal of the recipient
    (("-Q", "DATA"), "421 4.0.0"),                 # 421 to DATA, then the connection closed
    (("-q", "DATA"), "closed the connection"),     # dropped at DATA, without a reply
], ids=["4xx-rcpt", "421-data", "dropped-at-data"])
def test_after_smtp_sink_failed_the_first_attempt_the_restarted_sink_gets_it_once(
        dumps: Path, gw: Gateway, sinks: list[SmtpSink], pli: RunningApp,
        failure: tuple[str, str], answer: str) -> None:
    failing = start_sink(sinks, gw.provider_port, dumps / "failing", *failure)
    queue_id = submit(gw)
    meta = wait_deferred(gw, queue_id)
    assert answer in meta.pending[0].reply
    failing.stop()
    assert failing.dumped() == []
    sink = start_sink(sinks, gw.provider_port, dumps / "normal")
    wait_until(lambda: dumped_to(sink, PATIENT), timeout=10)
    wait_queue_empty(gw)
    stays(lambda: len(sink.dumped()) == 1, 0.8)


def submit_smtputf8(gw: Gateway, recipient: str, data: bytes) -> None:
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        client.sendmail(ADDRESS, [recipient], data, mail_options=["SMTPUTF8"])


def test_plain_mail_submitted_with_smtputf8_reaches_a_provider_without_it(
        dumps: Path, gw: Gateway, sinks: list[SmtpSink], pli: RunningApp) -> None:
    """Mail clients may ask for SMTPUTF8 out of habit; smtp-sink, like some providers, does
    not offer it. Only mail that needs it (an address or a header not in ASCII) may wait."""
    sink = start_sink(sinks, gw.provider_port, dumps / "dump")
    submit_smtputf8(gw, PATIENT, message())
    got = wait_until(lambda: dumped_to(sink, PATIENT), timeout=10)
    wait_queue_empty(gw)
    assert b"SMTPUTF8" not in got[0].split(b"\nReceived:")[0]


def test_mail_that_needs_smtputf8_bounces_at_once_on_a_provider_without_it(
        dumps: Path, gw: Gateway, sinks: list[SmtpSink], pli: RunningApp) -> None:
    sink = start_sink(sinks, gw.provider_port, dumps / "dump")
    recipient = "élodie@exemple.fr"
    data = (f"From: {ADDRESS}\r\nTo: {recipient}\r\nSubject: Rendez-vous\r\n\r\n"
            "Bonjour\r\n").encode()
    submit_smtputf8(gw, recipient, data)
    got = wait_until(lambda: dumped_to(sink, ADDRESS), timeout=10)  # the DSN, not a retry
    wait_queue_empty(gw)
    assert b"X-Mail-Args: <>" in got[0]
    dsn = parse_dsn(got[0].split(b"\n", 5)[5].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    block = dsn.per_recipient[0]
    assert block["Final-Recipient"] == f"rfc822; {recipient}"
    assert block["Status"] == "5.6.7"
    assert "SMTPUTF8" in dsn.text
    assert len(sink.dumped()) == 1
