"""The spool on disk: what a queued message is made of, what start-up cleans, and the lock
that keeps the server and the command line from handling one message at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.spool.store import Busy, QueuedMessage, Recipient, Spool, new_queue_id

CONTENT = b"From: dr.martin@cabinet-martin.fr\r\nTo: p@example.org\r\n\r\nBonjour\r\n"


def queued_message(queue_id: str | None = None) -> QueuedMessage:
    return QueuedMessage(id=queue_id or new_queue_id(), mail_from="dr.martin@cabinet-martin.fr",
                         recipients=[Recipient("p@example.org"), Recipient("q@example.org")],
                         created=time.time(), size=len(CONTENT),
                         route_sender="dr.martin@cabinet-martin.fr")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.create()
    return spool


def test_enqueue_writes_the_message_and_its_envelope_and_leaves_no_temporary_file(
        spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    assert (spool.msg_dir / f"{message.id}.eml").read_bytes() == CONTENT
    meta = json.loads((spool.meta_dir / f"{message.id}.json").read_bytes())
    assert meta["mail_from"] == "dr.martin@cabinet-martin.fr"
    assert [r["address"] for r in meta["recipients"]] == ["p@example.org", "q@example.org"]
    assert list(spool.tmp_dir.iterdir()) == []
    assert spool.ids() == [message.id]
    assert spool.load(message.id) == message
    assert spool.content(message.id) == CONTENT


def test_queued_files_are_readable_only_by_pli(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    for path in (spool.msg_dir / f"{message.id}.eml", spool.meta_dir / f"{message.id}.json"):
        assert path.stat().st_mode & 0o077 == 0, path
    for folder in (spool.root, spool.msg_dir, spool.meta_dir, spool.tmp_dir):
        assert folder.stat().st_mode & 0o077 == 0, folder


def test_save_rewrites_the_envelope_and_keeps_the_message(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    message.recipients[0].state = "sent"
    message.attempts = 2
    spool.save(message)
    loaded = spool.load(message.id)
    assert loaded is not None and loaded.attempts == 2
    assert [r.address for r in loaded.pending] == ["q@example.org"]
    assert spool.content(message.id) == CONTENT


def test_recover_removes_half_written_files_and_keeps_queued_messages(spool: Spool) -> None:
    kept = queued_message()
    spool.enqueue(kept, CONTENT)
    orphan = new_queue_id()  # the message file was written, the envelope never was
    (spool.msg_dir / f"{orphan}.eml").write_bytes(CONTENT)
    (spool.tmp_dir / f"{new_queue_id()}.json.0a1b2c3d").write_bytes(b"{")
    (spool.tmp_dir / f"{new_queue_id()}.eml.4e5f6a7b").write_bytes(CONTENT[:10])

    assert spool.recover() == 3
    assert sorted(p.name for p in spool.msg_dir.iterdir()) == [f"{kept.id}.eml"]
    assert list(spool.tmp_dir.iterdir()) == []
    assert spool.ids() == [kept.id]
    assert spool.content(kept.id) == CONTENT
    assert spool.recover() == 0


def test_recover_creates_a_missing_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "data" / "spool")
    assert spool.recover() == 0
    assert spool.ids() == []


def test_a_failed_envelope_write_leaves_nothing_behind(spool: Spool) -> None:
    message = queued_message()
    (spool.meta_dir / f"{message.id}.json").mkdir()  # the rename into meta/ will fail
    with pytest.raises(IsADirectoryError):
        spool.enqueue(message, CONTENT)
    assert list(spool.msg_dir.iterdir()) == []
    assert list(spool.tmp_dir.iterdir()) == []


def test_remove_is_idempotent(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    spool.remove(message.id)
    assert spool.ids() == [] and spool.load(message.id) is None
    assert list(spool.msg_dir.iterdir()) == []
    spool.remove(message.id)
    spool.remove("never-queued")


def test_locked_yields_the_message_while_holding_it(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    with spool.locked(message.id) as held:
        assert held == message
        with pytest.raises(Busy):  # a second holder in the same process, another fd
            with spool.locked(message.id):
                pass
    with spool.locked(message.id) as again:  # released on exit
        assert again == message


def test_locked_raises_busy_while_another_process_holds_the_message(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    with subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         "f = open(sys.argv[1], 'rb')\n"
         "fcntl.flock(f, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n",
         str(spool.msg_dir / f"{message.id}.eml")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(Busy):
            with spool.locked(message.id):
                pass
        holder.communicate(timeout=10)  # closes its stdin: it exits
    with spool.locked(message.id) as held:  # the holder exited: free again
        assert held == message


def test_locked_yields_none_for_a_message_no_longer_queued(spool: Spool) -> None:
    with spool.locked("0123456789ABCDEF") as held:
        assert held is None
    message = queued_message()
    spool.enqueue(message, CONTENT)
    spool.remove(message.id)
    with spool.locked(message.id) as held:
        assert held is None


def test_a_message_removed_while_its_lock_was_awaited_is_not_handed_out(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is taken on an open file: if the message was deleted and its name reused in
    between, the holder must not act on a file that is no longer the one it locked."""
    message = queued_message()
    spool.enqueue(message, CONTENT)
    path = spool.msg_dir / f"{message.id}.eml"
    real_open = os.open

    def open_then_replace(p: str | os.PathLike[str], flags: int, *args: int) -> int:
        fd = real_open(p, flags, *args)
        if Path(p) == path:
            monkeypatch.setattr(os, "open", real_open)
            spool.remove(message.id)
            spool.enqueue(queued_message(message.id), CONTENT)
        return fd

    monkeypatch.setattr(os, "open", open_then_replace)
    with spool.locked(message.id) as held:
        assert held is None


def test_an_unreadable_envelope_does_not_hide_the_other_queued_messages(spool: Spool) -> None:
    """The delivery scan reads every envelope: one damaged file must not stop it (the
    scheduler would stop for good, and nothing queued would be retried any more)."""
    good = queued_message()
    spool.enqueue(good, CONTENT)
    for name, data in (("0BAD", b"{not json"), ("0OLD", b'{"id": "0OLD", "unknown": 1}')):
        spool.enqueue(queued_message(name), CONTENT)
        (spool.meta_dir / f"{name}.json").write_bytes(data)
    assert [m.id for m in spool.messages()] == [good.id]
