"""A failure is never left untold: if the DSN cannot be queued, the message stays in the
spool with its outcome, and the DSN is queued at a later attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

import gateway.spool.dsn as dsn_module
from tests.spool.helpers import PATIENT, queued, submit
from tests.support import ADDRESS, LoopThread, Provider, RunningApp, make_gateway, wait_until


def test_a_dsn_that_could_not_be_queued_is_queued_later(
        tmp_path: Path, loop: LoopThread, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = make_gateway(tmp_path / "pli")
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    provider.handler.rcpt_replies[PATIENT] = "550 5.1.1 No such user"
    real_build = dsn_module.build_dsn
    calls = []

    def failing_once(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_build(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(dsn_module, "build_dsn", failing_once)
    app = RunningApp(loop, gw).start()
    try:
        queue_id = submit(gw)
        # First try: the DSN fails; the message stays, its outcome saved.
        kept = wait_until(lambda: [m for m in queued(gw) if m.id == queue_id and
                                   m.recipients[0].state == "failed"])
        assert kept[0].unreported and not kept[0].pending
        # A later scan queues the DSN; the message then leaves the spool.
        dsn = wait_until(lambda: [r for r in provider.received if r.rcpt_tos == [ADDRESS]],
                         timeout=15)
        assert b"No such user" in dsn[0].content
        wait_until(lambda: not queued(gw))
        assert len(calls) == 2
        assert all(r.rcpt_tos == [ADDRESS] for r in provider.received)  # nobody got it twice
    finally:
        app.stop()
        provider.stop()
