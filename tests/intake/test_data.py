"""The DATA phase as a stream: what is kept is what a line-by-line reading of RFC 5321
keeps, whatever pieces the bytes arrive in, and only CRLF . CRLF ends it."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.intake.data import DataReader, DataStream, IncomingFile, Transfer, receive

END = b"\r\n.\r\n"


def reference(stream: bytes) -> tuple[bytes, bytes]:
    """(the message, what follows the final dot) by the rules, read at once."""
    at = (b"\r\n" + stream).find(END)
    assert at >= 0
    content, rest = stream[:at], stream[at + 3:]
    content = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    lines = [line[1:] if line.startswith(b".") else line for line in content.split(b"\r\n")]
    return b"\r\n".join(lines), rest


def run(stream: bytes, *, limit: int | None = None, buffer: int = 8,
        pieces: list[int] | None = None) -> tuple[bytes, Transfer, bytes]:
    async def go() -> tuple[bytes, Transfer, bytes]:
        reader = DataStream(limit=buffer)
        position = 0
        for size in pieces or [len(stream)]:
            reader.feed_data(stream[position:position + size])
            position += size
        reader.feed_data(stream[position:])
        reader.feed_eof()
        written: list[bytes] = []

        async def write(batch: list[bytes]) -> None:
            written.extend(batch)

        transfer = await receive(reader, DataReader(limit), write)
        return b"".join(written), transfer, await reader.read()
    return asyncio.run(go())


STREAMS = st.lists(st.sampled_from([b"a", b"b", b".", b"..", b"\r\n", b"\r", b"\n", b"\0",
                                    b"\r\n.", b"\n.\r\n", b"\r.\r\n", b"x" * 20]),
                   max_size=40).map(b"".join)


@settings(max_examples=600)
@given(STREAMS, st.lists(st.integers(min_value=1, max_value=9), max_size=20),
       st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b.fr>\r\n"]))
def test_the_stream_keeps_what_the_rules_keep_in_any_pieces(
        body: bytes, pieces: list[int], after: bytes) -> None:
    stream = body + END + after
    expected, rest = reference(stream)
    kept, transfer, left = run(stream, pieces=pieces)
    assert kept == expected
    assert left == rest  # the next command is left for the command loop
    assert transfer.size == len(expected)
    assert transfer.nul == (b"\0" in expected)


def test_a_dot_after_a_bare_line_feed_is_content_never_the_end() -> None:
    kept, _, left = run(b"Subject: x\r\n\r\nun\n.\r\nMAIL FROM:<x@evil.example>\r\n" + END)
    assert b"MAIL FROM" in kept and left == b""
    kept, _, left = run(b"un\r.\r\ndeux" + END)
    assert kept == b"un\r\n\r\ndeux\r\n" and left == b""


def test_every_line_ends_in_crlf_and_dots_are_unstuffed() -> None:
    kept, transfer, _ = run(b"a\nb\rc\r\n..d\r\n.e" + END)
    assert kept == b"a\r\nb\r\nc\r\n.d\r\ne\r\n"
    assert transfer.bare_line_ends > 0


def test_past_the_limit_nothing_is_kept_and_the_end_is_still_found() -> None:
    kept, transfer, left = run(b"x" * 5000 + END + b"QUIT\r\n", limit=1000, buffer=64)
    assert transfer.too_big and transfer.size == 5002  # the last line ends in CRLF
    assert len(kept) <= 1000 + 64
    assert left == b"QUIT\r\n"


def test_a_line_longer_than_998_octets_is_kept_and_noted() -> None:
    short = run(b"a" * 998 + b"\r\n" + b"b" * 500 + END, buffer=100)
    assert not short[1].long_lines
    kept, transfer, _ = run(b"a" * 500 + b"\r\n" + b"b" * 999 + END, buffer=100)
    assert transfer.long_lines and kept.endswith(b"b" * 999 + b"\r\n")


def test_an_empty_message_ends_at_once() -> None:
    kept, transfer, left = run(b".\r\nQUIT\r\n")
    assert kept == b"" and transfer.size == 0 and left == b"QUIT\r\n"


def test_the_incoming_file_is_made_off_the_event_loop_and_written_whole(tmp_path: Path) -> None:
    """Made on another thread (creating a file may wait for the filesystem's journal):
    the bytes written after it are the file's, and its mode is the owner's alone."""
    made_by: list[str] = []

    async def main() -> None:
        pool = ThreadPoolExecutor(1, thread_name_prefix="spool")
        loop = asyncio.get_running_loop()
        incoming = IncomingFile(tmp_path / "m", lambda *a: loop.run_in_executor(pool, *a))

        def submit(call: object) -> asyncio.Future[int]:
            def made() -> int:
                made_by.append(threading.current_thread().name)
                return call()  # type: ignore[operator, no-any-return]
            return loop.run_in_executor(pool, made)

        incoming.begin(submit)
        await incoming.write([b"From: a@b.fr\r\n", b"\r\nBonjour\r\n"])
        incoming.close()
        pool.shutdown()

    asyncio.run(main())
    assert made_by and made_by[0].startswith("spool")
    assert (tmp_path / "m").read_bytes() == b"From: a@b.fr\r\n\r\nBonjour\r\n"
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o600


def test_a_session_ended_while_its_file_is_being_made_leaves_no_file_and_no_descriptor(
        tmp_path: Path) -> None:
    release = threading.Event()
    before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        pool = ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()
        incoming = IncomingFile(tmp_path / "m", lambda *a: loop.run_in_executor(pool, *a))

        def slow(call: object) -> asyncio.Future[int]:
            def made() -> int:
                release.wait(5)
                return call()  # type: ignore[operator, no-any-return]
            return loop.run_in_executor(pool, made)

        incoming.begin(slow)
        writing = asyncio.ensure_future(incoming.write([b"x"]))
        await asyncio.sleep(0.05)
        writing.cancel()  # the client went away before its file was made
        await asyncio.gather(writing, return_exceptions=True)
        incoming.discard()
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not (tmp_path / "m").exists() and len(os.listdir("/proc/self/fd")) <= before:
                break
        pool.shutdown()

    asyncio.run(main())
    assert not (tmp_path / "m").exists()
    assert len(os.listdir("/proc/self/fd")) <= before
