"""One message over one connection: streamed from its queue file, dot-stuffed, and with
PIPELINING the commands go in one write."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosmtplib

from gateway.spool.store import QueuedMessage, Recipient, Spool
from gateway.spool.transaction import read_blocks, send
from tests.support import HOST, free_port


async def provider(port: int, seen: list[bytes], pipelining: bool,
                   data_reply: bytes = b"250 2.0.0 Stored") -> asyncio.Server:
    """A provider on raw streams: it answers MAIL only once the DATA command arrived
    too, which a client that waits for each reply never sends."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 provider.test\r\n")
        await reader.readline()
        extensions = b"250-provider.test\r\n" + (b"250-PIPELINING\r\n" if pipelining else b"")
        writer.write(extensions + b"250 8BITMIME\r\n")
        commands = b""
        while not commands.endswith(b"DATA\r\n"):
            line = await reader.readline()
            if not line:
                return
            commands += line
            if not pipelining:
                writer.write(b"354 go\r\n" if line == b"DATA\r\n" else b"250 ok\r\n")
        seen.append(commands)
        if pipelining:  # every reply at once, in order
            writer.write(b"".join(b"354 go\r\n" if c == b"DATA" else b"250 ok\r\n"
                                  for c in commands.split(b"\r\n")[:-1]))
        body = await reader.readuntil(b"\r\n.\r\n")
        seen.append(body)
        writer.write(data_reply + b"\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(session, HOST, port, limit=64 * 1024 * 1024)


def deliver(tmp_path: Path, content: bytes, pipelining: bool) -> tuple[list[bytes], list[Recipient]]:
    spool = Spool(tmp_path / "spool")
    spool.create()
    message = QueuedMessage(id="Q1", mail_from="dr@cabinet.fr",
                            recipients=[Recipient("a@example.org"), Recipient("b@example.org")],
                            created=time.time(), size=0, route_sender="dr@cabinet.fr")
    spool.enqueue(message, content)
    seen: list[bytes] = []
    port = free_port()

    async def go() -> None:
        server = await provider(port, seen, pipelining)
        smtp = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, timeout=5)
        await smtp.connect()
        await smtp.ehlo()
        with spool.open_message("Q1") as queued:
            await asyncio.wait_for(send(
                smtp, message, message.pending, read_blocks(queued, spool.run),
                size=queued.size, options=[], timeout=5, data_timeout=5), 10)
        await smtp.quit()
        server.close()
        await server.wait_closed()
    asyncio.run(go())
    spool.close()
    return seen, message.recipients


def test_with_pipelining_mail_rcpt_and_data_go_together(tmp_path: Path) -> None:
    seen, recipients = deliver(tmp_path, b"Subject: x\r\n\r\nBonjour\r\n", pipelining=True)
    assert seen[0].startswith(b"MAIL FROM:<dr@cabinet.fr>")
    assert seen[0].endswith(b"RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    assert [r.state for r in recipients] == ["sent", "sent"]


def test_without_it_each_command_waits_for_its_reply(tmp_path: Path) -> None:
    seen, recipients = deliver(tmp_path, b"Subject: x\r\n\r\nBonjour\r\n", pipelining=False)
    assert seen[0].count(b"\r\n") == 4 and [r.state for r in recipients] == ["sent", "sent"]


def test_lines_starting_with_a_dot_are_stuffed_across_every_chunk(tmp_path: Path) -> None:
    lines = [b".%d" % n + b"x" * (n % 97) for n in range(40_000)]
    content = b"Subject: x\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    seen, _ = deliver(tmp_path, content, pipelining=True)
    sent = seen[1]
    assert sent.endswith(b"\r\n.\r\n")
    assert sent[:-3].replace(b"\r\n..", b"\r\n.") == content
