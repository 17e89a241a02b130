"""`pli run`'s hourly housekeeping: two tasks, one job each. One purges the vault's
expired links, the other deletes audit files past their retention; they run at start,
then again at their interval (made short here), and one failing never stops the other.
The purge first tells the senders who asked of their links that expired unopened."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from gateway.audit import AuditTrail
from gateway.vault import Vault
from tests.support import Gateway, LoopThread, RunningApp, make_gateway, wait_until
from tests.vault.helpers import seal

INTERVAL = 0.2
OLD = time.time() - 400 * 86400  # past the 365 days audit files are kept


def expired_link(gw: Gateway) -> str:
    link: str = seal(Vault(gw.settings().vault_dir), expires_in=-60).id
    return link


def old_audit_file(gw: Gateway, name: str) -> Path:
    """A file of records past the retention period, named to sort before today's."""
    path: Path = gw.settings().audit_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"seq":0}\n')
    os.utime(path, (OLD, OLD))
    return path


def housekeeping(gw: Gateway, loop: LoopThread) -> RunningApp:
    running = RunningApp(loop, gw)
    running.app.vault_purge_interval = INTERVAL
    running.app.audit_expiry_interval = INTERVAL
    return running


def test_expired_links_and_old_audit_files_go_at_start_and_at_every_run(
        gw: Gateway, loop: LoopThread) -> None:
    AuditTrail(gw.settings().audit_dir).record("admin.queue_flushed")  # today's file
    first_link = expired_link(gw)
    first_file = old_audit_file(gw, "audit-000000000000-20200101.jsonl")
    running = housekeeping(gw, loop)
    vault = running.app.vault
    with capture_logs() as logged:
        running.start()
        try:
            wait_until(lambda: vault.get(first_link) is None and not first_file.exists())
            # Later runs, not only the one at start, find what expired since.
            later_link = expired_link(gw)
            later_file = old_audit_file(gw, "audit-000000000000-20200102.jsonl")
            wait_until(lambda: vault.get(later_link) is None and not later_file.exists())
        finally:
            running.stop()
    purged = [e for e in logged if e["event"] == "vault.purged"]
    assert sum(e["links"] for e in purged) == 2 and len(purged) >= 2
    assert [e["files"] for e in logged if e["event"] == "audit.files_expired"] == [1, 1]
    assert len(AuditTrail(gw.settings().audit_dir).files()) == 1  # today's stays


def test_a_vault_purge_that_fails_does_not_keep_audit_files_past_their_time(
        gw: Gateway, loop: LoopThread) -> None:
    AuditTrail(gw.settings().audit_dir).record("admin.queue_flushed")
    old = old_audit_file(gw, "audit-000000000000-20200101.jsonl")
    running = housekeeping(gw, loop)

    def broken(*_: Any) -> None:
        raise OSError(5, "Input/output error")

    running.app.vault.purge = broken  # type: ignore[assignment,method-assign]
    with capture_logs() as logged:
        running.start()
        try:
            wait_until(lambda: not old.exists())
            wait_until(lambda: sum(e["event"] == "vault.purge_failed" for e in logged) >= 2)
        finally:
            running.stop()
    assert not any(e["event"] == "vault.purged" for e in logged)


def test_pli_run_purges_the_vault_and_expires_audit_files_every_hour(
        gw: Gateway, loop: LoopThread) -> None:
    """The README's "pli run also does every hour": the intervals a running Pli uses."""
    app = RunningApp(loop, gw).app
    assert app.vault_purge_interval == 3600
    assert app.audit_expiry_interval == 3600


def test_retention_days_in_pli_toml_decides_which_audit_files_go(
        tmp_path: Path, loop: LoopThread) -> None:
    """``[audit] retention_days = 10``: a file 20 days old goes, one 5 days old stays."""
    gw = make_gateway(tmp_path / "pli", extra="\n[audit]\nretention_days = 10\n")
    AuditTrail(gw.settings().audit_dir).record("admin.queue_flushed")  # today's file
    folder = gw.settings().audit_dir
    old, recent = folder / "audit-000000000000-20200101.jsonl", \
        folder / "audit-000000000000-20200102.jsonl"
    for path, days in ((old, 20), (recent, 5)):
        path.write_text('{"seq":0}\n')
        when = time.time() - days * 86400
        os.utime(path, (when, when))
    running = housekeeping(gw, loop)
    running.start()
    try:
        wait_until(lambda: not old.exists())
        time.sleep(3 * INTERVAL)  # later runs too leave the recent one
    finally:
        running.stop()
    assert recent.exists()


def test_the_hourly_run_tells_the_sender_of_a_link_that_expired_unopened_then_purges_it(
        gw: Gateway, loop: LoopThread, provider: Any) -> None:
    from gateway.vault import LinkOptions, Manifest, SealFile
    from tests.support import ADDRESS

    vault = Vault(gw.settings().vault_dir)
    link = vault.seal(Manifest(sender=ADDRESS, subject="SentinelSubjectH1", date=""),
                      [SealFile("SentinelFileH2.pdf", "application/pdf", "application/pdf",
                                b"%PDF")],
                      sender=ADDRESS, recipient="patient@gmail.com",
                      expires_at=time.time() - 60, download_limit=5, access_code=None,
                      options=LinkOptions(notify=("expired",)))
    running = housekeeping(gw, loop)
    running.start()
    try:
        [notice] = wait_until(lambda: provider.received)
        wait_until(lambda: running.app.vault.get(link.id) is None)  # purged once told
        time.sleep(3 * INTERVAL)
        assert len(provider.received) == 1  # told once
    finally:
        running.stop()
    assert (notice.mail_from, notice.rcpt_tos) == (ADDRESS, [ADDRESS])
    assert b"SentinelSubjectH1" not in notice.content and b"SentinelFileH2" not in notice.content
    assert link.id.encode() in notice.content and link.secret.encode() not in notice.content
