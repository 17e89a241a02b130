"""One message over one open, authenticated connection to the provider.

aiosmtplib opens the connection (STARTTLS, AUTH); for the transaction itself Pli speaks on
that connection's transport with a protocol of its own, because aiosmtplib's takes the
message as one block of bytes. Here the message is streamed from its queue file in
chunks, dot-stuffed as it goes, with the transport's flow control respected, so that
relaying a 140 MB message costs no more memory than a 4 KB one. When the provider offers
PIPELINING (RFC 2920), MAIL, every RCPT and DATA go in one write and their replies are
read in order: two round trips per message instead of three plus one per recipient.

Outcomes are set on the recipients (sent, failed for good, or still pending); an error
that a later attempt may not meet raises :class:`TemporaryError`. The transaction is one
message over one connection that :mod:`gateway.spool.connections` opened; the loop that
chooses them is :mod:`gateway.spool.worker`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiosmtplib

from gateway.spool.outcomes import TemporaryError, is_final
from gateway.spool.store import QueuedFile, QueuedMessage, Recipient

CHUNK = 64 * 1024
BLOCK = 1024 * 1024  # read from the queue file on the spool's threads, then sent in chunks
HEAD = 64 * 1024  # what is read to decide whether the message needs SMTPUTF8


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class _Conversation(asyncio.Protocol):
    """Replies read from the transport in order, and the transport's flow control."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._replies: collections.deque[Reply] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end + 1]).rstrip(b"\r\n")
            del self._buffer[:end + 1]
            self._lines.append(line)
            if line[3:4] != b"-":  # the last line of a reply
                code = int(line[:3]) if line[:3].isdigit() else 0
                text = b"\n".join(part[4:] for part in self._lines).decode("utf-8", "replace")
                self._replies.append(Reply(code, text.strip()))
                self._lines = []
        if len(self._buffer) > 64 * 1024:  # no provider sends a line that long
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def reply(self, timeout: float) -> Reply:
        while not self._replies:
            if self._lost is not None:
                raise self._lost
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response") from None
            finally:
                self._waiter = None
        return self._replies.popleft()

    async def drain(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._writable is not None:
            await self._writable
            if self._lost is not None:
                raise self._lost


async def relay(smtp: aiosmtplib.SMTP, message: QueuedMessage, pending: list[Recipient],
                queued: QueuedFile, run: Run, *, timeout: float, data_timeout: float) -> None:
    """The message in ``queued`` to ``pending``, with the options it needs. A connection
    the provider closed raises ``SMTPServerDisconnected`` (the caller may try a fresh one);
    anything else that cuts the transaction short is a :class:`TemporaryError`."""
    options = []
    if _needs_smtputf8(message, pending, queued.read(0, min(queued.size, HEAD))):
        if not smtp.supports_extension("smtputf8"):
            for r in pending:  # no later attempt can do better: tell the sender now
                r.state, r.reply = "failed", (
                    "550 5.6.7 The provider does not accept internationalised addresses "
                    "(SMTPUTF8), which this message needs")
            return
        options.append("SMTPUTF8")
    if smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    try:
        await send(smtp, message, pending, read_blocks(queued, run), size=queued.size,
                   options=options, timeout=timeout, data_timeout=data_timeout)
    except (aiosmtplib.SMTPServerDisconnected, TemporaryError):
        raise
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TemporaryError(f"451 4.4.2 Delivery interrupted: {type(exc).__name__}") from None


def _needs_smtputf8(message: QueuedMessage, pending: list[Recipient], head: bytes) -> bool:
    """As Postfix decides: only an address or a header that is not ASCII needs SMTPUTF8. A
    client that asked for it out of habit must not make plain mail undeliverable through a
    provider that does not offer it. ``head`` is the message's first bytes."""
    if not message.smtputf8:
        return False
    addresses = [message.mail_from, *(r.address for r in pending)]
    headers = head.split(b"\r\n\r\n", 1)[0]
    return not (all(a.isascii() for a in addresses) and headers.isascii())


async def send(smtp: aiosmtplib.SMTP, message: QueuedMessage, pending: list[Recipient],
               blocks: AsyncIterator[bytes], *, size: int, options: list[str],
               timeout: float, data_timeout: float) -> None:
    """Relay the message whose bytes ``blocks`` gives to the ``pending`` recipients."""
    transport = smtp.transport
    if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    utf8 = "SMTPUTF8" in options
    if smtp.supports_extension("size"):
        options = [*options, f"SIZE={size}"]
    mail = _command("MAIL FROM:", message.mail_from, options, utf8)
    rcpts = [_command("RCPT TO:", r.address, [], utf8) for r in pending]
    talk = _Conversation()
    previous = transport.get_protocol()
    transport.set_protocol(talk)
    try:
        if smtp.supports_extension("pipelining"):
            transport.write(mail + b"".join(rcpts) + b"DATA\r\n")
            replies = [await talk.reply(timeout) for _ in range(len(rcpts) + 2)]
        else:
            replies = []
            for command in (mail, *rcpts, b"DATA\r\n"):
                transport.write(command)
                replies.append(await talk.reply(timeout))
                if command is mail and replies[0].code != 250:
                    break
        mail_reply, rcpt_replies = replies[0], replies[1:len(rcpts) + 1]
        data_reply = replies[len(rcpts) + 1] if len(replies) == len(rcpts) + 2 else None
        if mail_reply.code != 250:
            if data_reply is not None and data_reply.code == 354:
                transport.write(b".\r\n")  # an empty message the provider refuses anyway
                await talk.reply(data_timeout)
            await _reset(transport, talk, timeout)
            _all(pending, mail_reply)
            return
        accepted = []
        for recipient, reply in zip(pending, rcpt_replies, strict=False):
            if reply.code in (250, 251):
                accepted.append(recipient)
            else:
                _record(recipient, reply)
        if data_reply is None or data_reply.code != 354:
            if data_reply is not None and accepted:
                _all(accepted, data_reply)
            await _reset(transport, talk, timeout)
            return
        if not accepted:  # DATA taken although no recipient was: end it at once
            transport.write(b".\r\n")
            await talk.reply(data_timeout)
            return
        await _stream(transport, talk, blocks)
        final = await talk.reply(data_timeout)
        if final.code == 250:
            for recipient in accepted:
                recipient.state, recipient.reply = "sent", str(final)
        else:
            _all(accepted, final)
    finally:
        if not transport.is_closing():
            transport.set_protocol(previous)


async def _stream(transport: asyncio.WriteTransport, talk: _Conversation,
                  blocks: AsyncIterator[bytes]) -> None:
    """The message, dot-stuffed (RFC 5321 §4.5.2), then the final dot."""
    line_start = True
    carry = b""  # a CR held back, so that CR LF "." is never split between two chunks
    last = b"\r\n"
    async for block in blocks:
        for start in range(0, len(block), CHUNK):
            data = carry + block[start:start + CHUNK]
            carry = b""
            if data.endswith(b"\r"):
                data, carry = data[:-1], b"\r"
            if not data:
                continue
            if line_start and data[:1] == b".":
                data = b"." + data
            stuffed = data.replace(b"\r\n.", b"\r\n..")
            line_start = data.endswith(b"\r\n")
            last = (last + stuffed)[-2:]
            transport.write(stuffed)
            await talk.drain()
    if carry:
        transport.write(carry)
        last = (last + carry)[-2:]
    transport.write(b".\r\n" if last == b"\r\n" else b"\r\n.\r\n")
    await talk.drain()


Run = Callable[..., Awaitable[bytes]]


async def read_blocks(queued: QueuedFile, run: Run) -> AsyncIterator[bytes]:
    """The queue file's message bytes in blocks; a large one is read on the spool's
    threads (``run``), so a cold disk never stalls the event loop."""
    if queued.size <= BLOCK:
        yield queued.read(0, queued.size)
        return
    for start in range(0, queued.size, BLOCK):
        yield await run(queued.read, start, min(queued.size, start + BLOCK))


def _command(verb: str, address: str, options: list[str], utf8: bool) -> bytes:
    line = f"{verb}<{address}>" + "".join(f" {o}" for o in options) + "\r\n"
    if any(c in address for c in "\r\n\0<>"):
        raise ValueError("an address the provider could read as two commands")
    return line.encode("utf-8" if utf8 else "ascii")


async def _reset(transport: asyncio.WriteTransport, talk: _Conversation,
                 timeout: float) -> None:
    """RSET after a refused transaction, so the connection can carry the next one."""
    try:
        transport.write(b"RSET\r\n")
        await talk.reply(timeout)
    except (aiosmtplib.SMTPException, OSError):
        pass


def _all(recipients: list[Recipient], reply: Reply) -> None:
    if is_final(reply.code, str(reply)):
        for r in recipients:
            r.state, r.reply = "failed", str(reply)
        return
    raise TemporaryError(str(reply))


def _record(recipient: Recipient, reply: Reply) -> None:
    recipient.reply = str(reply)
    if is_final(reply.code, str(reply)):
        recipient.state = "failed"
