"""The spool on disk: what a queued message is made of (one file: the message, then its
envelope), what start-up cleans, and the lock that keeps the server and the command line
from handling one message at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.spool.store import FOOTER_SIZE, Busy, QueuedMessage, Recipient, Spool, new_queue_id
from gateway.types import ByteRange

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


def test_enqueue_writes_one_file_the_message_then_its_envelope_and_no_temporary_file(
        spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    data = (spool.queue_dir / message.id).read_bytes()
    assert data.startswith(CONTENT)
    footer = data[-FOOTER_SIZE:]
    assert footer.split()[0] == b"PLI-QUEUE-1"
    envelope = json.loads(data[len(CONTENT):-FOOTER_SIZE])
    assert envelope["mail_from"] == "dr.martin@cabinet-martin.fr"
    assert [r["address"] for r in envelope["recipients"]] == ["p@example.org", "q@example.org"]
    assert list(spool.tmp_dir.iterdir()) == []
    assert spool.ids() == [message.id]
    assert spool.load(message.id) == message
    assert spool.content(message.id) == CONTENT
    assert spool.header_block(message.id) == CONTENT.split(b"\r\n\r\n")[0] + b"\r\n"


def test_byte_ranges_are_copied_from_the_message_file(spool: Spool, tmp_path: Path) -> None:
    source = tmp_path / "received"
    source.write_bytes(b"Subject: x\r\n\r\n" + b"0123456789" * 100_000)
    fd = os.open(source, os.O_RDONLY)
    try:
        message = queued_message()
        spool.enqueue(message, (b"Subject: y\r\n\r\n", ByteRange(14, 14 + 1_000_000),
                                lambda: iter([b"\r\n-- \r\n"])), fd)
    finally:
        os.close(fd)
    expected = b"Subject: y\r\n\r\n" + b"0123456789" * 100_000 + b"\r\n-- \r\n"
    assert spool.content(message.id) == expected
    assert spool.load(message.id).size == len(expected)  # type: ignore[union-attr]


def test_a_received_file_is_queued_where_it_is(spool: Spool) -> None:
    """A message passed as it came is not copied: its intake file becomes the queue file."""
    received = spool.incoming("RECEIVED1")
    received.write_bytes(CONTENT)
    inode = received.stat().st_ino
    message = queued_message()
    spool.adopt(message, received)
    assert not received.exists()
    assert (spool.queue_dir / message.id).stat().st_ino == inode
    assert spool.content(message.id) == CONTENT and message.size == len(CONTENT)
    assert spool.load(message.id) == message


def test_writers_at_the_same_moment_share_the_folder_fsync(spool: Spool) -> None:
    messages = [queued_message() for _ in range(24)]
    before = spool.queue_sync.fsyncs
    start = threading.Barrier(len(messages))

    def write(message: QueuedMessage) -> None:
        start.wait()
        spool.enqueue(message, CONTENT)

    threads = [threading.Thread(target=write, args=(m,)) for m in messages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(spool.ids()) == sorted(m.id for m in messages)
    fsyncs = spool.queue_sync.fsyncs - before
    assert 1 <= fsyncs < len(messages), fsyncs


def test_queued_files_are_readable_only_by_pli(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    spool.save(message)
    for path in (spool.queue_dir / message.id, spool.state_dir / f"{message.id}.json"):
        assert path.stat().st_mode & 0o077 == 0, path
    for folder in (spool.root, spool.queue_dir, spool.state_dir, spool.incoming_dir,
                   spool.tmp_dir):
        assert folder.stat().st_mode & 0o077 == 0, folder


def test_save_writes_the_state_beside_and_keeps_the_message(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    queue_file = (spool.queue_dir / message.id).read_bytes()
    message.recipients[0].state = "sent"
    message.attempts = 2
    spool.save(message)
    loaded = spool.load(message.id)
    assert loaded is not None and loaded.attempts == 2
    assert [r.address for r in loaded.pending] == ["q@example.org"]
    assert spool.content(message.id) == CONTENT
    assert (spool.queue_dir / message.id).read_bytes() == queue_file  # never changed


def test_recover_removes_what_was_never_acknowledged_and_keeps_queued_messages(
        spool: Spool) -> None:
    kept = queued_message()
    spool.enqueue(kept, CONTENT)
    spool.incoming(new_queue_id()).write_bytes(CONTENT)  # received, never queued
    (spool.tmp_dir / f"{new_queue_id()}.0a1b2c3d").write_bytes(CONTENT[:10])
    (spool.state_dir / f"{new_queue_id()}.json").write_bytes(b"{}")  # its message is gone

    assert spool.recover() == 3
    assert list(spool.incoming_dir.iterdir()) == [] and list(spool.tmp_dir.iterdir()) == []
    assert list(spool.state_dir.iterdir()) == []
    assert spool.ids() == [kept.id]
    assert spool.content(kept.id) == CONTENT
    assert spool.recover() == 0


def test_recover_brings_an_earlier_spool_into_this_layout(spool: Spool) -> None:
    """Pli 0.1 kept msg/<id>.eml and meta/<id>.json: an upgrade loses none of them."""
    old = queued_message()
    old.recipients[0].state = "sent"
    (spool.root / "msg").mkdir()
    (spool.root / "meta").mkdir()
    (spool.root / "msg" / f"{old.id}.eml").write_bytes(CONTENT)
    (spool.root / "meta" / f"{old.id}.json").write_bytes(old.to_json())
    (spool.root / "msg" / "NEVERACKED.eml").write_bytes(CONTENT)  # no envelope: never queued
    assert spool.recover() == 1
    assert spool.ids() == [old.id]
    assert spool.content(old.id) == CONTENT
    loaded = spool.load(old.id)
    assert loaded is not None and [r.address for r in loaded.pending] == ["q@example.org"]
    assert not (spool.root / "msg").exists() and not (spool.root / "meta").exists()


def test_recover_creates_a_missing_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "data" / "spool")
    assert spool.recover() == 0
    assert spool.ids() == []


def test_a_failed_rename_leaves_nothing_behind(spool: Spool) -> None:
    message = queued_message()
    (spool.queue_dir / message.id).mkdir()  # the rename into queue/ will fail
    with pytest.raises(FileExistsError):
        spool.enqueue(message, CONTENT)
    assert list(spool.tmp_dir.iterdir()) == []
    (spool.queue_dir / message.id).rmdir()
    assert spool.ids() == []


def test_remove_is_idempotent(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    spool.save(message)
    spool.remove(message.id)
    assert spool.ids() == [] and spool.load(message.id) is None
    assert list(spool.queue_dir.iterdir()) == [] and list(spool.state_dir.iterdir()) == []
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
         str(spool.queue_dir / message.id)],
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
    path = spool.queue_dir / message.id
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
    (spool.queue_dir / "0CUT").write_bytes(CONTENT)  # no envelope at its end
    spool.enqueue(queued_message("0BAD"), CONTENT)
    (spool.state_dir / "0BAD.json").write_bytes(b"{not json")
    spool.enqueue(queued_message("0OLD"), CONTENT)
    (spool.state_dir / "0OLD.json").write_bytes(b'{"id": "0OLD", "unknown": 1}')
    assert [m.id for m in spool.messages()] == [good.id]


def test_recover_keeps_a_held_message_held_with_its_reason(spool: Spool) -> None:
    message = queued_message()
    spool.enqueue(message, CONTENT)
    with spool.locked(message.id) as locked:
        assert locked is not None
        spool.hold(locked, "internal error (KeyError) at 3 attempts in a row")
    spool.recover()
    assert spool.ids() == [] and spool.ids(held=True) == [message.id]
    held = spool.load(message.id, held=True)
    assert held is not None and held.held.startswith("internal error (KeyError)")
    with spool.locked(message.id, held=True) as locked:
        assert locked is not None
        spool.release(locked)
    assert spool.ids() == [message.id] and spool.ids(held=True) == []
    released = spool.load(message.id)
    assert released is not None and (released.held, released.internal_errors) == ("", 0)
    assert spool.content(message.id) == CONTENT


def test_the_header_block_ends_at_the_first_empty_line_and_is_whole_without_one(
        spool: Spool) -> None:
    """What a DSN quotes (text/rfc822-headers): never a line of the body, which may hold
    an empty line of its own and a line that looks like a header."""
    body = b"Bonjour\r\n\r\nX-Diagnostic: biopsie\r\n\r\nFin\r\n"
    with_body = queued_message()
    spool.enqueue(with_body, b"From: a@b.fr\r\nSubject: x\r\n\r\n" + body)
    assert spool.header_block(with_body.id) == b"From: a@b.fr\r\nSubject: x\r\n"
    headers_only = queued_message()
    spool.enqueue(headers_only, b"From: a@b.fr\r\nSubject: x\r\n")
    assert spool.header_block(headers_only.id) == b"From: a@b.fr\r\nSubject: x\r\n"
    no_header = queued_message()  # a message that begins with its empty line
    spool.enqueue(no_header, b"\r\n" + body)
    assert spool.header_block(no_header.id) == b""


def _source(tmp_path: Path, size: int) -> int:
    path = tmp_path / "received"
    path.write_bytes(bytes(n % 251 for n in range(size)))
    return os.open(path, os.O_RDONLY)


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "read and write"])
def test_a_byte_range_of_the_received_file_is_copied_exactly(
        spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        kernel_copy: bool) -> None:
    """A passed copy's body is a range of the file the message came in: the range and
    nothing around it, whether the kernel copies it or, where it cannot (another
    filesystem: EXDEV), Pli does in 1 MiB steps."""
    import errno

    if not kernel_copy:
        def unsupported(*_: object) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", unsupported)
    size = 3 * 1024 * 1024 + 17
    fd = _source(tmp_path, size)
    try:
        whole = os.pread(fd, size, 0)
        message = queued_message()
        start, end = 1000, size - 1000  # more than 1 MiB, neither end of the file
        spool.enqueue(message, [b"Header: x\r\n\r\n", ByteRange(start, end)], fd)
    finally:
        os.close(fd)
    assert spool.content(message.id) == b"Header: x\r\n\r\n" + whole[start:end]
    assert message.size == len(b"Header: x\r\n\r\n") + end - start


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "read and write"])
def test_a_range_past_the_end_of_the_received_file_queues_nothing(
        spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        kernel_copy: bool) -> None:
    import errno

    if not kernel_copy:
        def unsupported(*_: object) -> int:
            raise OSError(errno.ENOSYS, "Function not implemented")
        monkeypatch.setattr(os, "copy_file_range", unsupported)
    fd = _source(tmp_path, 5000)
    try:
        with pytest.raises(OSError, match="shorter than expected"):
            spool.enqueue(queued_message(), [ByteRange(0, 6000)], fd)
    finally:
        os.close(fd)
    assert spool.ids() == [] and list(spool.tmp_dir.iterdir()) == []


def test_a_copy_error_other_than_not_supported_is_raised(
        spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def failing(*_: object) -> int:
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "copy_file_range", failing)
    fd = _source(tmp_path, 5000)
    try:
        with pytest.raises(OSError) as raised:
            spool.enqueue(queued_message(), [ByteRange(0, 5000)], fd)
    finally:
        os.close(fd)
    assert raised.value.errno == errno.EIO
    assert spool.ids() == []
