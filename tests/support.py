"""Test peers and helpers: a provider played by aiosmtpd or Postfix's smtp-sink, Pli itself
in a background event loop or as a real `pli run` process. Loopback only."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, Session

from gateway.app import App
from gateway.config import load_settings
from gateway.initdir import InitOptions, init_dir
from gateway.message.model import Message
from gateway.spool.store import Spool, new_queue_id
from gateway.types import ByteRange, Envelope, Segment, Submission
from gateway.types import Received as TypesReceived
from gateway.users import User, hash_password, load_users, save_users

T = TypeVar("T")

HOST = "127.0.0.1"
USER = "martin"
PASSWORD = "correct horse battery"
ADDRESS = "dr.martin@cabinet-martin.fr"
OTHER_USER = "durand"
OTHER_PASSWORD = "another long secret"
OTHER_ADDRESS = "dr.durand@cabinet-martin.fr"


_PORTS_GIVEN: set[int] = set()


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel draws outgoing connections' source ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port for a server a test starts later. Not one from bind(0): those come from
    the range of outgoing source ports, and a connection made in between (a client, Pli
    relaying) can take it first, failing the server's bind. Never the same one twice."""
    low, high = _ephemeral_ports()
    below, above = range(max(1024, low - 12000), low), range(high + 1, 65536)
    candidates = below if len(below) >= len(above) else above
    for port in random.sample(candidates, k=min(2000, len(candidates))):
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    with socket.socket() as s:  # the source ports cover everything: do as before
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    def is_open() -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex((HOST, port)) == 0
    wait_until(is_open, timeout)


class LoopThread:
    """An asyncio event loop in a thread, so blocking clients (smtplib) can talk to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.run(_cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def body_bytes(body: Sequence[Segment], message: Message) -> bytes:
    """An outgoing copy's bytes, its byte ranges read from ``message`` (what the spool
    writes)."""
    out = bytearray()
    for segment in body:
        if isinstance(segment, bytes):
            out += segment
        elif isinstance(segment, ByteRange):
            out += message.raw(segment.start, segment.end)
        else:
            for chunk in segment():
                out += chunk
    return bytes(out)


def submission_of(spool: Spool, content: bytes, mail_from: str, rcpt_tos: Sequence[str],
                  *, user: str = USER, allowed: Sequence[str] | None = None) -> Submission:
    """A submission as the intake hands it over: its bytes in a file of the spool's
    ``incoming/`` folder (CRLF line ends, as the DATA phase writes them)."""
    spool.create()
    queue_id = new_queue_id()
    path = spool.incoming(queue_id)
    path.write_bytes(content)
    return Submission(Envelope(mail_from, tuple(rcpt_tos)), path, user, HOST,
                      frozenset(allowed if allowed is not None else (mail_from,)),
                      received=TypesReceived(size=len(content), long_lines=True),
                      queue_id=queue_id)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class SinkHandler:
    """A provider whose answers a test can script."""

    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    sessions: int = 0
    open_now: int = 0  # connections open at this moment
    most_open: int = 0  # the most that were ever open at once
    users: dict[str, str] = field(default_factory=dict)
    pipelining: bool = False  # offer PIPELINING (aiosmtpd reads pipelined commands anyway)

    async def handle_EHLO(self, server: Any, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        self.received.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                      envelope.original_content or b""))
        return "250 2.0.0 Stored"


class _CountedSMTP(SMTP):
    """Tells the handler when its connection ends (aiosmtpd's handlers are not told)."""

    def connection_lost(self, error: Exception | None) -> None:
        handler = self.event_handler
        if not getattr(self, "_counted_lost", False):
            self._counted_lost = True
            handler.open_now -= 1
        super().connection_lost(error)


class Provider:
    """An aiosmtpd provider on loopback, with STARTTLS (and AUTH when users are given)."""

    def __init__(self, loop: LoopThread, tls: ssl.SSLContext | None, port: int | None = None,
                 *, implicit_tls: bool = False, offer_starttls: bool = True,
                 users: dict[str, str] | None = None,
                 smtp_options: dict[str, Any] | None = None) -> None:
        """``smtp_options``: aiosmtpd's SMTP arguments for AUTH, instead of those for
        ``users`` (a provider with a mechanism of its own, such as XOAUTH2)."""
        self.loop = loop
        self.tls = tls
        self.port = port or free_port()
        self.handler = SinkHandler(users=dict(users or {}))
        self.implicit_tls = implicit_tls
        self.offer_starttls = offer_starttls
        self.smtp_options = smtp_options
        self.server: asyncio.Server | None = None

    def _authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str,
                       auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword
        ok = (isinstance(auth_data, LoginPassword)
              and self.handler.users.get(auth_data.login.decode()) == auth_data.password.decode())
        return AuthResult(success=ok, handled=False)  # unhandled: aiosmtpd sends the 535

    def start(self) -> Provider:
        handler = self.handler

        def factory() -> SMTP:
            handler.sessions += 1
            handler.open_now += 1
            handler.most_open = max(handler.most_open, handler.open_now)
            kwargs: dict[str, Any] = dict(self.smtp_options or {})
            if handler.users and self.smtp_options is None:
                kwargs = {"authenticator": self._authenticator, "auth_required": True,
                          "auth_require_tls": not self.implicit_tls}
            return _CountedSMTP(
                handler, hostname="provider.test", decode_data=False, enable_SMTPUTF8=True,
                tls_context=self.tls if (self.offer_starttls and not self.implicit_tls)
                else None, **kwargs)

        async def go() -> asyncio.Server:
            return await asyncio.get_running_loop().create_server(
                factory, HOST, self.port, ssl=self.tls if self.implicit_tls else None,
                reuse_address=True)
        self.server = self.loop.run(go())
        return self

    def stop(self) -> None:
        if self.server is not None:
            server = self.server
            self.server = None

            async def close() -> None:
                server.close()
            self.loop.run(close())

    @property
    def received(self) -> list[Received]:
        return self.handler.received


class SmtpSink:
    """Postfix's smtp-sink as the provider; ``options`` inject 4xx/5xx/421/drops."""

    def __init__(self, port: int | None = None, options: tuple[str, ...] = (),
                 dump_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.options = options
        self.dump_dir = dump_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("smtp-sink") or (
            "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)

    def start(self) -> SmtpSink:
        binary = self.binary()
        assert binary, "smtp-sink is missing: run `make test`, which installs postfix"
        cmd = [binary, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            self.dump_dir.chmod(0o777)
            cmd += ["-d", f"{self.dump_dir}/%M."]
        cmd += [*self.options, f"{HOST}:{self.port}", "20"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None

    def dumped(self) -> list[bytes]:
        assert self.dump_dir is not None
        return [p.read_bytes() for p in sorted(self.dump_dir.rglob("*")) if p.is_file()]


@dataclass
class Gateway:
    """A configuration folder made by `pli init`, with two users, and its ports."""

    folder: Path
    submission_port: int
    submissions_port: int
    provider_port: int

    @property
    def config(self) -> Path:
        return self.folder / "pli.toml"

    @property
    def cert(self) -> Path:
        """The server certificate followed by the practice CA's, as `pli init` writes it."""
        return self.folder / "tls" / "cert.pem"

    @property
    def ca(self) -> Path:
        return self.folder / "tls" / "ca.pem"

    def client_context(self) -> ssl.SSLContext:
        """Trusting the practice CA alone, as a mail client that imported it."""
        return ssl.create_default_context(cafile=str(self.ca))

    def settings(self) -> Any:
        return load_settings(self.config)


# The relay tests use a policy that passes every recipient (a contractor's deliberate
# choice), keeping the rule that refuses consumer webmail senders.
RELAY_POLICY = """\
[lists]
consumer-webmail = "lists/consumer-webmail.txt"
internal = "lists/internal.txt"

[[rule]]
name = "consumer-webmail-sender"
when = { sender_in = ["consumer-webmail"] }
action = "block"

[rule.block]
message_fr = "Envoi refusé : adresse grand public. Utilisez l'adresse du cabinet."
message_en = "Not sent: consumer address. Use the practice's own address."

[[rule]]
name = "relay-everything"
default = true
action = "pass"
"""


def make_gateway(folder: Path, *, provider_port: int | None = None,
                 upstream_security: str = "none", delivery: str = "",
                 extra: str = "", policy: str | None = RELAY_POLICY) -> Gateway:
    """A `pli init` folder; ``policy=None`` keeps the default policy init installs."""
    gw = Gateway(folder, free_port(), free_port(), provider_port or free_port())
    init_dir(folder, InitOptions(
        domain="cabinet-martin.fr", hostname="localhost", upstream_host=HOST,
        upstream_port=gw.provider_port, upstream_security=upstream_security,
        listen_host=HOST, submission_port=gw.submission_port,
        submissions_port=gw.submissions_port,
    ))
    config = gw.config.read_text()
    if upstream_security != "none":
        config = config.replace('# ca_file = "provider-ca.pem"', 'ca_file = "tls/cert.pem"')
    # Fast retries so tests exercise the schedule in seconds, not minutes.
    config += "\n[delivery]\nretry_min = 0.3\nretry_max = 1.0\nscan_interval = 0.2\n" \
              "idle_close = 0.5\nconnect_timeout = 3\ncommand_timeout = 10\n" + delivery
    # Each test gateway gets its own metrics port, so parallel servers never compete.
    config = config.replace("port = 9925", f"port = {free_port()}")
    config = config.replace("port = 8080", f"port = {free_port()}")  # the portal's
    config += extra
    gw.config.write_text(config)
    if policy is not None:
        (folder / "policy.toml").write_text(policy)
    users = load_users(folder / "users.toml")
    users[USER] = User(USER, hash_password(PASSWORD), (ADDRESS,))
    users[OTHER_USER] = User(OTHER_USER, hash_password(OTHER_PASSWORD), (OTHER_ADDRESS,))
    save_users(folder / "users.toml", users)
    return gw


class RunningApp:
    """Pli's App in the test's background loop."""

    def __init__(self, loop: LoopThread, gw: Gateway) -> None:
        self.loop = loop
        self.gw = gw
        self.app = App(gw.settings())

    def start(self) -> RunningApp:
        self.loop.run(self.app.start())
        return self

    def stop(self) -> None:
        self.loop.run(self.app.stop(grace=2))


class RawSmtp:
    """One SMTP session over a bare socket, each command sent as the bytes given: for
    what a mail library would not send (a NUL, an empty sender, a routed address)."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None,
                 timeout: float = 10) -> None:
        """``context``: TLS from the first byte (port 465), trusting that context."""
        raw = socket.create_connection((HOST, port), timeout=timeout)
        self.sock: socket.socket = (context.wrap_socket(raw, server_hostname="localhost")
                                    if context is not None else raw)
        self.reader = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> tuple[int, bytes]:
        """The next reply: its code and its lines' text, without the codes and CRLF."""
        lines = []
        while True:
            line = self.reader.readline()
            assert line.endswith(b"\r\n"), f"connection closed or cut: {line!r}"
            lines.append(line[4:-2])
            if line[3:4] != b"-":
                return int(line[:3]), b"\n".join(lines)

    def say(self, command: str | bytes) -> tuple[int, bytes]:
        data = command.encode() if isinstance(command, str) else command
        self.sock.sendall(data + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext) -> None:
        assert self.say("EHLO [192.0.2.1]")[0] == 250
        assert self.say("STARTTLS")[0] == 220
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.reader = self.sock.makefile("rb")
        assert self.say("EHLO [192.0.2.1]")[0] == 250

    def login(self, user: str, password: str) -> tuple[int, bytes]:
        blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.say(f"AUTH PLAIN {blob}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> RawSmtp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class PliProcess:
    """`pli run` as a real process, for crash and signal tests."""

    def __init__(self, gw: Gateway, log_path: Path, wrap: Sequence[str] = ()) -> None:
        self.gw = gw
        self.log_path = log_path
        self.wrap = list(wrap)  # a command that ends by exec'ing its arguments
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PliProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "gateway.cli", "run", "-c", str(self.gw.config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for_port(self.gw.submission_port)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(15)
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
