"""The audit trail: typed records only, a hash chain that shows any tampering, and a
whole-gateway check that no health data lands anywhere outside the vault's ciphertext."""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.audit import REDACTED, AuditTrail, Retention, story, verify
from gateway.audit import _digest as audit_digest
from gateway.users import User, hash_password, load_users, save_users
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    LoopThread,
    PliProcess,
    Provider,
    make_gateway,
    wait_until,
)


def filled(tmp_path: Path, n: int = 6, **kw: object) -> AuditTrail:
    trail = AuditTrail(tmp_path / "audit", **kw)  # type: ignore[arg-type]
    for i in range(n):
        trail.record("delivery.sent", queue_id=f"Q{i}", recipient=f"p{i}@example.org",
                     reply="250 2.0.0 Ok: queued as ABC")
    return trail


def lines(trail: AuditTrail) -> tuple[Path, list[str]]:
    path = trail.files()[-1]
    return path, path.read_text().splitlines(keepends=True)


def test_an_untouched_trail_verifies(tmp_path: Path) -> None:
    count, findings = verify(filled(tmp_path))
    assert count == 6 and findings == []


def test_an_edited_record_is_found_by_its_number(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    path, rows = lines(trail)
    rows[2] = rows[2].replace("p2@example.org", "someone@else.org")
    path.write_text("".join(rows))
    findings = verify(trail)[1]
    assert [f.seq for f in findings] == [3] and "edited" in findings[0].problem


@pytest.mark.parametrize("tamper", ["remove", "insert", "reorder"])
def test_removed_inserted_or_reordered_records_break_the_chain(tmp_path: Path,
                                                               tamper: str) -> None:
    trail = filled(tmp_path)
    path, rows = lines(trail)
    if tamper == "remove":
        del rows[2]
    elif tamper == "insert":
        rows.insert(3, rows[1])
    else:
        rows[2], rows[3] = rows[3], rows[2]
    path.write_text("".join(rows))
    findings = verify(trail)[1]
    assert findings, tamper
    assert any("chain is broken" in f.problem for f in findings)


def test_records_cut_from_the_end_are_found_through_the_head(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    path, rows = lines(trail)
    path.write_text("".join(rows[:-2]))
    findings = verify(trail)[1]
    assert any("5 to 6 were removed from the end" in f.problem for f in findings)


BROKEN = "the chain is broken before this record: a record was removed, inserted or moved here"


def _tampered(rows: list[str], how: str) -> list[str]:
    if how == "garbled":
        rows[2] = "{not json\n"
    elif how == "edited":
        rows[2] = rows[2].replace("p2@example.org", "someone@else.org")
    elif how == "removed":
        del rows[2]
    elif how == "inserted":
        rows.insert(3, rows[1])
    elif how == "last cut":
        del rows[-1]
    elif how == "two cut":
        del rows[-2:]
    elif how == "last rewritten":  # a record of its own, hashed anew: only the head knows
        record = json.loads(rows[-1])
        record["recipient"] = "someone@else.org"
        record["hash"] = audit_digest(record)
        rows[-1] = json.dumps(record) + "\n"
    return rows


@pytest.mark.parametrize(("how", "expected"), [
    ("garbled", ["{f}:3: not a valid audit record", f"{{f}}:4 (record 4): {BROKEN}",
                 "{f}:4 (record 4): expected record 3: records removed"]),
    ("edited", ["{f}:3 (record 3): edited: its content does not match its hash"]),
    ("removed", [f"{{f}}:3 (record 4): {BROKEN}",
                 "{f}:3 (record 4): expected record 3: records removed"]),
    ("inserted", [f"{{f}}:4 (record 2): {BROKEN}",
                  "{f}:4 (record 2): expected record 4: records inserted or moved",
                  f"{{f}}:5 (record 4): {BROKEN}",
                  "{f}:5 (record 4): expected record 3: records removed"]),
    ("last cut", ["audit.head:1 (record 6): record 6 was removed from the end"]),
    ("two cut", ["audit.head:1 (record 6): records 5 to 6 were removed from the end"]),
    ("last rewritten", ["audit.head:1 (record 6): the last record does not match the head"]),
])
def test_verify_says_where_each_kind_of_tampering_is_and_what_it_was(
        tmp_path: Path, how: str, expected: list[str]) -> None:
    """What `pli audit verify` prints, line for line: the file and line, the record's
    number, and what happened there."""
    trail = filled(tmp_path)
    path, rows = lines(trail)
    path.write_text("".join(_tampered(rows, how)))
    count, findings = verify(trail)
    assert [str(f) for f in findings] == [e.replace("{f}", path.name) for e in expected]
    assert count == len(_tampered(lines(filled(tmp_path / "fresh"))[1], how))


def test_a_messages_story_takes_in_its_bounce_and_the_bounces_own_delivery(
        tmp_path: Path) -> None:
    """`pli audit show --message`: the copies of the message, the DSN queued about one of
    them (which names it in ``about``), that DSN's own delivery, and nothing else."""
    trail = AuditTrail(tmp_path / "audit")
    trail.record("delivery.sent", queue_id="Q1-1", recipient="a@example.org", reply="250 ok")
    trail.record("delivery.sent", queue_id="Q2-1", recipient="b@example.org", reply="250 ok")
    trail.record("dsn.queued", queue_id="D9", about="Q1-1", recipient="dr@cabinet.fr",
                 failed=1)
    trail.record("delivery.sent", queue_id="D9", recipient="dr@cabinet.fr", reply="250 ok")
    trail.close()
    told = [(r["event"], r["queue_id"]) for r in story(trail, message="Q1")]
    assert told == [("delivery.sent", "Q1-1"), ("dsn.queued", "D9"), ("delivery.sent", "D9")]


def test_the_chain_runs_across_rotated_files(tmp_path: Path) -> None:
    trail = filled(tmp_path, 40, retention=Retention(max_file_bytes=2000))
    assert len(trail.files()) > 2
    assert verify(trail) == (40, [])


def test_only_typed_fields_of_known_events_are_written(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit")
    trail.record("policy.decided", queue_id="Q1", sender="Dr X <dr@cab.fr>",
                 recipients=["p@gmail.com", "Résultats biopsie"], rule="everyone-else",
                 action="protect", subject="Résultats biopsie", filename="scan.pdf",
                 types=["application/pdf", "résultats"], sizes=[10], link="abc_DEF-1")
    trail.record("portal.code_rejected", link="L1", client="192.0.2.1", code="4821")
    trail.record("some.free_text", text="Résultats biopsie")
    trail.record("delivery.deferred", queue_id="Q1", recipient="p@gmail.com",
                 reply="452 4.2.2 Mailbox of p@gmail.com full, biopsie not stored")
    written = "".join(p.read_text() for p in trail.files())
    assert "biopsie" not in written and "scan.pdf" not in written and "4821" not in written
    records = [json.loads(line) for line in written.splitlines()]
    assert [r["event"] for r in records] == ["policy.decided", "portal.code_rejected",
                                             "delivery.deferred"]
    decided = records[0]
    assert decided["sender"] == REDACTED and decided["recipients"] == ["p@gmail.com", REDACTED]
    assert decided["types"] == ["application/pdf", REDACTED] and "subject" not in decided
    assert records[2]["reply"] == "452 4.2.2"


def test_files_past_the_retention_are_deleted_but_never_the_current_one(tmp_path: Path) -> None:
    trail = filled(tmp_path, 30, retention=Retention(days=1, max_file_bytes=2000))
    files = trail.files()
    old = time.time() - 3 * 86400
    for path in files:
        os.utime(path, (old, old))
    assert trail.expire_old_files() == len(files) - 1
    assert trail.files() == [files[-1]]


def test_the_story_of_a_message_includes_its_copies_dsn_and_link(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit")
    trail.record("policy.decided", queue_id="Q1", action="protect", link="L1")
    trail.record("spool.queued", queue_id="Q1")
    trail.record("spool.queued", queue_id="Q1-1")
    trail.record("spool.queued", queue_id="Q2")
    trail.record("delivery.bounced", queue_id="Q1-1", recipient="a@b.fr", reply="550 5.1.1")
    trail.record("dsn.queued", queue_id="D1", about="Q1-1", recipient="dr@cab.fr", failed=1)
    trail.record("delivery.sent", queue_id="D1", recipient="dr@cab.fr", reply="250 ok")
    trail.record("portal.code_accepted", link="L1", client="192.0.2.1")
    told = [(r["event"], r.get("queue_id") or r.get("link")) for r in story(trail, message="Q1")]
    assert told == [("policy.decided", "Q1"), ("spool.queued", "Q1"), ("spool.queued", "Q1-1"),
                    ("delivery.bounced", "Q1-1"), ("dsn.queued", "D1"), ("delivery.sent", "D1"),
                    ("portal.code_accepted", "L1")]
    assert [r["event"] for r in story(trail, link="L1")] == ["policy.decided",
                                                              "portal.code_accepted"]


def test_the_story_of_a_link_goes_on_along_its_thread_of_replies(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit")
    trail.record("policy.decided", queue_id="Q1", action="protect", link="L1")
    trail.record("portal.opened", link="L1", client="192.0.2.1")
    trail.record("portal.reply", link="L1", reply="R1", files=2, bytes=10, size=90,
                 client="192.0.2.1")
    trail.record("notice.queued", queue_id="N1", link="R1", notice="reply",
                 recipients=["dr@cab.fr"])
    trail.record("portal.reply", link="R1", reply="A1", files=0, bytes=0, size=40,
                 client="192.0.2.9")
    trail.record("portal.opened", link="A1", client="192.0.2.1")
    trail.record("portal.opened", link="L2", client="192.0.2.1")
    told = [(r["event"], r.get("reply") or r["link"]) for r in story(trail, link="L1")]
    assert told == [("policy.decided", "L1"), ("portal.opened", "L1"), ("portal.reply", "R1"),
                    ("notice.queued", "R1"), ("portal.reply", "A1"), ("portal.opened", "A1")]


def pli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_no_health_data_is_written_outside_the_vault_ciphertext(
        tmp_path: Path, loop: LoopThread) -> None:
    """Pass, protect and block messages full of sentinels go through a real `pli run`; then
    every byte Pli wrote outside the vault's encrypted objects is searched for them."""
    gw = make_gateway(tmp_path / "pli", policy=None)
    users = load_users(gw.folder / "users.toml")
    users["perso"] = User("perso", hash_password("a long password"), ("cabinet@gmail.com",))
    save_users(gw.folder / "users.toml", users)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    log_path = tmp_path / "pli-output.log"
    proc = PliProcess(gw, log_path).start()
    sentinels = ["SentinelSubjectQ7", "SentinelBodyK4", "SentinelFileZ9", "Sntl7788Qz"]

    def message(to: str, tag: str = "") -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = ADDRESS
        msg["To"] = to
        msg["Subject"] = f"Résultats SentinelSubjectQ7 {tag}".strip()
        msg.set_content("Le bilan SentinelBodyK4 est normal.")
        msg.add_attachment(b"%PDF-1.4\nSentinelBodyK4\n%%EOF\n", maintype="application",
                           subtype="pdf", filename="SentinelFileZ9.pdf")
        return msg

    try:
        with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
            client.starttls(context=gw.client_context())
            client.login(USER, PASSWORD)
            client.send_message(message("dr.durand@cabinet-martin.fr"))   # pass
            client.send_message(message("patient@gmail.com"))             # protect, generated
            client.send_message(message("patient2@gmail.com", "[code:Sntl7788Qz]"))
        with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
            client.starttls(context=gw.client_context())
            client.login("perso", "a long password")
            with pytest.raises(smtplib.SMTPDataError):                     # block
                gmail = message("patient@gmail.com")
                gmail.replace_header("From", "cabinet@gmail.com")
                client.send_message(gmail)
        # The pass copy; for each protected group, the notice and the sender's receipt.
        got = wait_until(lambda: len(provider.received) == 5 and provider.received)
        codes = [re.search(rb"^\s+(\d{6})\s*$", r.content.replace(b"=\r\n", b""), re.M)
                 for r in got if r.rcpt_tos == [ADDRESS]]
        [code] = [c for c in codes if c]  # the generated one; the tagged one is the sender's
        sentinels.append(code.group(1).decode())
        # The link secrets too: they live only in the notices' and receipts' fragments.
        for r in got:
            for secret in re.findall(rb"/[lm]/[\w-]+#([\w-]+)",
                                     r.content.replace(b"=\r\n", b"")):
                if secret.decode() not in sentinels:
                    sentinels.append(secret.decode())
        assert len(sentinels) == 9  # two protected groups: two links, two senders' pages
        spool = gw.folder / "data" / "spool"
        wait_until(lambda: not list((spool / "queue").iterdir()))
    finally:
        proc.kill(15)
        provider.stop()
    # Each sentinel did reach the provider where it should (the colleague's copy)...
    colleague = next(r for r in got if r.rcpt_tos == ["dr.durand@cabinet-martin.fr"]).content
    assert b"SentinelSubjectQ7" in colleague
    # ...and appears nowhere Pli wrote, the vault's ciphertext aside.
    written = [log_path] + [p for p in (gw.folder / "data").rglob("*")
                            if p.is_file() and "objects" not in p.parts]
    assert any(p.name.startswith("audit-") for p in written)
    assert any(p.name.startswith("index.sqlite3") for p in written)
    for path in written:
        data = path.read_bytes()
        for sentinel in sentinels:
            assert sentinel.encode() not in data, (path, sentinel)
            assert sentinel.lower().encode() not in data.lower(), (path, sentinel)
    verified = pli("audit", "verify", "-c", str(gw.config))
    assert verified.returncode == 0, verified.stderr
    decided = [json.loads(line) for p in (gw.folder / "data" / "audit").glob("audit-*.jsonl")
               for line in p.read_text().splitlines()]
    actions = sorted(r["action"] for r in decided if r["event"] == "policy.decided")
    assert actions == ["block", "pass", "protect", "protect"]


def test_admin_commands_are_audited_and_verify_catches_an_edit(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    config = str(gw.config)
    assert pli("user", "add", "-c", config, "bernard", "--address", "b@cabinet-martin.fr",
               ).returncode == 1  # no password given on stdin: refused, nothing audited
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "user", "add", "-c", config,
                             "bernard", "--address", "b@cabinet-martin.fr"],
                            input="a long password indeed\n", capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert pli("user", "del", "-c", config, "bernard").returncode == 0
    files = sorted((gw.folder / "data" / "audit").glob("audit-*.jsonl"))
    events = [json.loads(line)["event"] for line in files[0].read_text().splitlines()]
    assert events == ["admin.user_added", "admin.user_removed"]
    assert "a long password" not in files[0].read_text()
    assert pli("audit", "verify", "-c", config).returncode == 0
    files[0].write_text(files[0].read_text().replace("bernard", "bernadette", 1))
    tampered = pli("audit", "verify", "-c", config)
    assert tampered.returncode == 1 and "record 1" in tampered.stderr


def test_the_writer_thread_keeps_every_record_in_one_chain(tmp_path: Path) -> None:
    import threading

    trail = AuditTrail(tmp_path / "audit", retention=Retention(max_file_bytes=4000))
    trail.start_writer()

    def burst(n: int) -> None:
        for i in range(50):
            trail.record("spool.queued", queue_id=f"T{n}-{i}", size=i)
    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trail.close()
    assert verify(trail) == (200, [])
    assert len(trail.files()) > 1  # rotated by size within batches too


def test_a_crash_between_the_records_and_the_head_does_not_fork_the_chain(
        tmp_path: Path) -> None:
    trail = filled(tmp_path, 3)
    (trail.folder / "audit.head").write_text("1 " + "0" * 64 + "\n")  # as if it lagged
    trail.record("spool.queued", queue_id="Q9")
    assert verify(trail) == (4, [])


def test_a_long_last_record_is_read_whole_when_the_head_lags(tmp_path: Path) -> None:
    trail = filled(tmp_path, 2)
    many = [f"patient{i}@example.org" for i in range(300)]  # one record of about 8 KB
    trail.record("policy.decided", queue_id="Q8", recipients=many, action="protect")
    assert len(lines(trail)[1][-1]) > 4096
    (trail.folder / "audit.head").write_text("1 " + "0" * 64 + "\n")  # as if it lagged
    trail.record("spool.queued", queue_id="Q9")
    assert verify(trail) == (4, [])


def test_files_rotate_by_day_and_the_chain_runs_across_midnight(tmp_path: Path) -> None:
    """The README's "Files rotate by day or size": a record made after midnight (UTC)
    opens a file named after its day, however small the day before's is."""
    midnight = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    now = [midnight - 2]
    trail = AuditTrail(tmp_path / "audit", clock=lambda: now[0])
    for at in (midnight - 2, midnight - 1, midnight + 1, midnight + 2, midnight + 86400):
        now[0] = at
        trail.record("admin.queue_flushed")
    names = [p.name for p in trail.files()]
    assert names == ["audit-000000000001-20251231.jsonl", "audit-000000000003-20260101.jsonl",
                     "audit-000000000005-20260102.jsonl"]
    assert [len(p.read_text().splitlines()) for p in trail.files()] == [2, 2, 1]
    assert verify(trail) == (5, [])


def test_pli_audit_show_tells_one_links_story_and_says_when_there_is_none(
        tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    trail = AuditTrail(gw.settings().audit_dir)
    trail.record("policy.decided", queue_id="Q1", action="protect", link="L1")
    trail.record("spool.queued", queue_id="Q1")
    trail.record("portal.code_accepted", link="L1", client="192.0.2.1")
    trail.record("portal.code_accepted", link="L2", client="192.0.2.2")
    shown = pli("audit", "show", "--link", "L1", "-c", str(gw.config))
    assert shown.returncode == 0, shown.stderr
    told = [line.split()[1] for line in shown.stdout.splitlines()]
    assert told == ["policy.decided", "portal.code_accepted"]
    assert "192.0.2.2" not in shown.stdout
    none = pli("audit", "show", "--link", "L3", "-c", str(gw.config))
    assert none.returncode == 1 and none.stdout == "" and "no records" in none.stderr


def test_a_story_reads_past_a_line_that_is_not_a_record(tmp_path: Path) -> None:
    """A damaged line (``pli audit verify`` names it) does not hide what follows it."""
    trail = AuditTrail(tmp_path / "audit")
    trail.record("spool.queued", queue_id="Q1")
    path = trail.files()[-1]
    with path.open("a") as handle:
        handle.write("not a record\n")
    trail.record("delivery.bounced", queue_id="Q1", recipient="a@b.fr", reply="550 5.1.1")
    trail.record("dsn.queued", queue_id="D1", about="Q1", recipient="dr@cab.fr", failed=1)
    assert [r["event"] for r in story(trail, message="Q1")] == [
        "spool.queued", "delivery.bounced", "dsn.queued"]


def test_max_file_mb_in_pli_toml_decides_the_size_at_which_files_rotate(
        tmp_path: Path) -> None:
    """``[audit] max_file_mb`` reaches the trail `pli run` opens (and the commands that
    write to it): about 1 KB here, so 30 records of some 300 bytes make several files."""
    from gateway.app import open_audit

    gw = make_gateway(tmp_path / "pli", extra="\n[audit]\nmax_file_mb = 0.001\n")
    trail = open_audit(gw.settings())
    for i in range(30):
        trail.record("spool.queued", queue_id=f"Q{i}", size=i)
    trail.close()
    files = trail.files()
    assert len(files) >= 5
    assert all(path.stat().st_size < 1048 + 400 for path in files)
    assert verify(trail) == (30, [])


def test_pli_check_prints_how_long_the_trail_is_kept_and_in_what_files(
        tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", extra="\n[audit]\nretention_days = 30\nmax_file_mb = 2\n")
    checked = pli("check", "-c", str(gw.config))
    assert checked.returncode == 0, checked.stderr
    assert "audit kept 30 days in files of at most 2 MB" in checked.stdout
