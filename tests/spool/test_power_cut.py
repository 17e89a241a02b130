"""Nothing is lost after 250, even on a power cut: a real `pli run` on a disk whose power
is cut the moment each 250 is heard (``tests.powercut``: the write log of a disk with a
volatile cache, rebuilt up to that moment), and the spool and vault found on that disk
hold every message acknowledged so far, byte for byte, with its sealed link; a `pli run`
started on the disk after the last cut delivers each of them once.

``kill -9`` cannot show this: it leaves the page cache, so a missing fsync goes unseen.
Here the disk keeps only what a flush made durable before the client heard 250, so the
test fails if any fdatasync, rename or folder fsync on the way to the 250 (the queue
file's, the intake file's, the vault's objects and folders, the link index's commit) is
left out or done after the 250."""

from __future__ import annotations

import email
import email.policy
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.spool.store import Spool
from gateway.vault import Vault
from tests.powercut import PowerCutDisk, power_cut_disk
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    PliProcess,
    Provider,
    make_gateway,
    wait_until,
)

COLLEAGUE = "dr.durand@cabinet-martin.fr"
PATIENT = "patient@example.org"
LINK = re.compile(r"/l/([A-Za-z0-9_-]{22})#([A-Za-z0-9_-]{43})")


@dataclass
class Acknowledged:
    queue_id: str
    mark: int  # the disk's durable writes when the client heard the 250


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerCutDisk]:
    with power_cut_disk(tmp_path) as cut:
        yield cut


def _message(n: int, to: str, *, dated: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Dr Martin <{ADDRESS}>"
    msg["To"] = to
    msg["Subject"] = f"Compte rendu {n}"
    if dated:  # without it, the passed copy gets a header block of its own (Date, Message-ID)
        msg["Date"] = "Mon, 02 Nov 2026 09:15:00 +0100"
        msg["Message-ID"] = f"<cr-{n}@cabinet-martin.fr>"
    msg.set_content(f"Compte rendu numero {n}.\n" + "Ligne de texte.\n" * 200)
    msg.add_attachment(b"%PDF-1.4\n" + bytes(range(256)) * 40, maintype="application",
                       subtype="pdf", filename=f"cr-{n}.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _send_all(gw: Gateway, disk: PowerCutDisk) -> list[Acknowledged]:
    """Passed as it came (queued in the intake's file), passed with a header added
    (a new queue file), protected (vault link, notice and receipt), and split."""
    plan = [([COLLEAGUE], True), ([COLLEAGUE], False), ([PATIENT], True),
            ([COLLEAGUE, PATIENT], True)]
    acknowledged = []
    with smtplib.SMTP(HOST, gw.submission_port, local_hostname="[192.0.2.1]",
                      timeout=30) as client:
        client.starttls(context=gw.client_context())
        client.ehlo("[192.0.2.1]")
        client.login(USER, PASSWORD)
        for n, (recipients, dated) in enumerate(plan):
            assert client.mail(ADDRESS)[0] == 250
            for rcpt in recipients:
                assert client.rcpt(rcpt)[0] == 250
            code, text = client.data(_message(n, ", ".join(recipients), dated=dated))
            mark = disk.mark()  # the power goes the moment the 250 is heard
            assert code == 250, text
            acknowledged.append(Acknowledged(text.decode().split()[3], mark))
    return acknowledged


def _copies(spool: Spool, queue_id: str) -> list[str]:
    return [q for q in spool.ids() if q == queue_id or q.startswith(queue_id + "-")]


def _links(content: bytes) -> list[tuple[str, str]]:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    found = []
    for part in parsed.walk():
        if part.get_content_maintype() == "text":
            found.extend(LINK.findall(part.get_content()))
    return sorted(set(found))


def test_a_power_cut_at_any_moment_loses_no_message_acknowledged_before_it(
        tmp_path: Path, disk: PowerCutDisk) -> None:
    gw = make_gateway(disk.mount / "pli", policy=None)  # the default policy: protect patients
    config = gw.config.read_text()
    assert "max_message_size = 157286400" in config
    # One failed attempt per message (the provider is down), not a stream of state writes.
    gw.config.write_text(config.replace("retry_min = 0.3", "retry_min = 600")
                         .replace("retry_max = 1.0", "retry_max = 1200")
                         .replace("max_message_size = 157286400",  # the disk is small
                                  "max_message_size = 10485760"))
    disk.settle()
    started = disk.mark()
    pli = PliProcess(gw, tmp_path / "pli.log").start()
    try:
        acknowledged = _send_all(gw, disk)
    finally:
        pli.kill(signal.SIGKILL)

    live = Spool(gw.settings().spool_dir)
    copies = {a.queue_id: _copies(live, a.queue_id) for a in acknowledged}
    content = {q: live.content(q) for q in live.ids()}
    links = {q: _links(content[q]) for q in content}
    assert sorted(content) == sorted(q for ids in copies.values() for q in ids)
    assert len(content) == 1 + 1 + 2 + 3  # every copy, receipts included
    assert sum(len(found) for found in links.values()) == 2  # one notice per protect
    moments = disk.moments(since=started)
    assert {a.mark for a in acknowledged} <= set(moments)

    relative = gw.folder.relative_to(disk.mount)
    for moment in moments:
        with disk.after_power_cut(moment) as root:
            folder = root / relative
            spool = Spool(folder / "data" / "spool")
            spool.recover()
            present = spool.ids()
            # A queue file is whole or absent: none that counts as queued is unreadable.
            assert sorted(m.id for m in spool.messages()) == present, moment
            due = [q for a in acknowledged if a.mark <= moment for q in copies[a.queue_id]]
            assert set(due) <= set(present), (moment, due, present)
            vault = Vault(folder / "data" / "vault")
            for queue_id in present:
                assert spool.content(queue_id) == content[queue_id], (moment, queue_id)
                for link_id, secret in links[queue_id]:  # a notice queued: its link is whole
                    assert vault.get(link_id) is not None, (moment, queue_id)
                    (document,) = vault.read_manifest(link_id, secret).files
                    assert b"".join(vault.read_file(link_id, secret, document.object_id))

    # Pli started on the disk after the last cut delivers every message, once.
    with disk.after_power_cut(acknowledged[-1].mark) as root:
        restarted = Gateway(root / relative, gw.submission_port, gw.submissions_port,
                            gw.provider_port)
        loop = LoopThread()
        provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
        pli = PliProcess(restarted, tmp_path / "restarted.log").start()
        try:
            flushed = subprocess.run([sys.executable, "-m", "gateway.cli", "queue", "flush",
                                      "-c", str(restarted.config)], capture_output=True,
                                     text=True, timeout=60, check=False)
            assert flushed.returncode == 0, flushed.stderr
            wait_until(lambda: len(provider.received) >= len(content), timeout=60)
            spool = Spool(restarted.settings().spool_dir)
            wait_until(lambda: not spool.ids(), timeout=30)
            time.sleep(0.3)
        finally:
            pli.kill(signal.SIGKILL)
            provider.stop()
            loop.close()
    assert sorted(r.content for r in provider.received) == sorted(content.values())
