#!/usr/bin/env python3
"""Relay throughput: Pli against the same load sent straight into the same provider.

Each client connection does what a mail client does: connect, STARTTLS, AUTH, one 4 KB
message, QUIT; ``--clients`` of them run at once until ``--messages`` are sent. The load
goes once straight to the provider, once through a fresh `pli run` whose upstream is
that same provider process; rounds repeat (straight, pli, straight, pli, ...) because a
shared machine is noisy, and the ratio reported is the median of the rounds' ratios.

The provider is aiosmtpd in its own process with STARTTLS and AUTH (Postfix's smtp-sink
does neither), answering 250 to every message and telling this script when each one came
in. Pli relays to it as it would in production: STARTTLS, the provider's certificate
checked against a CA file, AUTH with a password file, its shipped delivery settings and
the policy `pli init` installs. With --floor each round also sends the load through a
bare forwarder (aiosmtpd in, aiosmtplib out, nothing else; row "forward"): its ratio is
about the most any relay on these libraries reaches on the machine.

Figures per run:
  msg/s     Straight: messages accepted by the provider per second. Pli: messages
            accepted by Pli AND received by the provider, per second from the start of
            the load to the last one in: the figure the ratio uses. acc/s is Pli's 250s.
  p50, p99  time from the end of DATA (the final "." written) to the 250, in the client.
  MB        peak resident memory (VmHWM) of the `pli run` process and of the provider.
  CPU       CPU time of the `pli run` process per message, warm-up included.
  %CPU      CPU time of the clients (this script), the provider and `pli run` during the
            measured load, in % of one CPU: which one is near 100 says what holds the run.

Run from the repository root:  .venv/bin/python bench/relay_throughput.py [--help]
Loopback only; every run is bounded by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PROVIDER_USER = "cabinet@cabinet-martin.fr"
PROVIDER_PASSWORD = "provider account password"


def provider_account(n: int) -> str:
    """The provider login of the n-th practitioner's mailbox (--accounts)."""
    return PROVIDER_USER if n == 0 else f"praticien{n}@cabinet-martin.fr"


def serve_until_stopped(factory: Callable[[], asyncio.BaseProtocol], port: int) -> None:
    """Serve ``factory``'s protocol on HOST:port until SIGTERM or SIGINT (child processes)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        server = await loop.create_server(factory, HOST, port, reuse_address=True)
        await stop.wait()
        server.close()

    asyncio.run(main())


def serve_smtp(handler: object, authenticator: Callable[..., object], tls: ssl.SSLContext,
               hostname: str, port: int) -> None:
    """aiosmtpd with STARTTLS required and AUTH inside it, until stopped (child processes)."""
    import warnings

    from aiosmtpd.smtp import SMTP

    def factory() -> SMTP:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SMTP(handler, hostname=hostname, decode_data=False,
                        enable_SMTPUTF8=True, tls_context=tls, require_starttls=True,
                        authenticator=authenticator, auth_required=True,
                        auth_require_tls=True)

    serve_until_stopped(factory, port)


# -- the provider: a child process of this script, which imports nothing from Pli --------

def serve_provider(port: int, cert: str, key: str, accounts: int) -> None:
    """aiosmtpd with STARTTLS and AUTH; writes the monotonic time of each 250 to stdout."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(cert, key)
    out = sys.stdout.fileno()

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            os.write(out, f"{time.monotonic():.6f}\n".encode())
            return "250 2.0.0 Stored"

    def authenticator(server: object, session: object, envelope: object, mechanism: str,
                      data: object) -> AuthResult:
        logins = {provider_account(n).encode() for n in range(accounts)}
        ok = (isinstance(data, LoginPassword) and data.login in logins
              and data.password == PROVIDER_PASSWORD.encode())
        return AuthResult(success=ok)

    serve_smtp(Handler(), authenticator, tls, "provider.test", port)


# -- the bare forwarder (--floor): a child process of this script, importing nothing from Pli

def serve_forwarder(port: int, target: int, cert: str, key: str, ca: str, password: str,
                    connections: int, logins: dict[str, str]) -> None:
    """What any relay built on the same libraries must do at least, and nothing more:
    aiosmtpd in (STARTTLS, AUTH with a password compared in memory), each message handed
    to one of ``connections`` kept aiosmtplib connections per provider account (STARTTLS,
    certificate checked, AUTH), and 250 as soon as it is in that in-memory queue. No
    spool (a crash loses what is queued), no parsing, no policy, no log: the lowest CPU
    cost per message a gateway on aiosmtpd and aiosmtplib can have, so the ratio it
    reaches is about the most any such gateway can reach on this machine. A message the
    provider does not take is dropped, and the benchmark counts it as lost. ``logins``
    maps each sender address to its provider login."""
    import aiosmtplib
    from aiosmtpd.smtp import AuthResult, LoginPassword

    intake_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    intake_tls.minimum_version = ssl.TLSVersion.TLSv1_2
    intake_tls.load_cert_chain(cert, key)
    upstream_tls = ssl.create_default_context(cafile=ca)
    Job = tuple[str, list[str], bytes]
    queues: dict[str, asyncio.Queue[Job]] = {}
    senders: set[asyncio.Task[None]] = set()

    async def relay(login: str, queue: asyncio.Queue[Job]) -> None:
        smtp: aiosmtplib.SMTP | None = None
        while True:
            mail_from, rcpt_tos, content = await queue.get()
            try:
                if smtp is None or not smtp.is_connected:
                    smtp = aiosmtplib.SMTP(hostname=HOST, port=target, start_tls=True,
                                           tls_context=upstream_tls, timeout=30)
                    await smtp.connect()
                    await smtp.login(login, PROVIDER_PASSWORD)
                await smtp.sendmail(mail_from, rcpt_tos, content)
            except Exception as exc:  # lost: the provider's count shows it
                smtp = None
                print(f"forwarder: {type(exc).__name__}: {exc}", file=sys.stderr)

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            login = logins[envelope.mail_from]
            queue = queues.get(login)
            if queue is None:
                queue = queues[login] = asyncio.Queue()
                for _ in range(connections):
                    senders.add(asyncio.get_running_loop().create_task(relay(login, queue)))
            queue.put_nowait((envelope.mail_from, envelope.rcpt_tos,
                              envelope.original_content))
            return "250 2.0.0 Queued in memory"

    def authenticator(server: object, session: object, envelope: object, mechanism: str,
                      data: object) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == password.encode()
        return AuthResult(success=ok)

    serve_smtp(Handler(), authenticator, intake_tls, "forwarder.test", port)


# -- the network: a child process standing between the senders and the provider ---------

def serve_delay(port: int, target: int, rtt_ms: float) -> None:
    """Forward each connection on ``port`` to ``target``, every byte half a round trip
    late in each direction; a new connection reaches the provider half a round trip after
    it was opened. Order is kept; bandwidth and losses are not modelled."""
    import collections

    one_way = rtt_ms / 2000

    class Side(asyncio.Protocol):
        """One end of a forwarded connection; what it receives goes to ``peer`` late."""

        def __init__(self) -> None:
            self.transport: asyncio.Transport | None = None
            self.peer: Side | None = None
            self.late: collections.deque[tuple[float, bytes | None]] = collections.deque()
            self.timer: asyncio.TimerHandle | None = None
            self.ended = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            self._later(data)

        def eof_received(self) -> bool:
            self._end()
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            self._end()

        def _end(self) -> None:
            if not self.ended:
                self.ended = True
                self._later(None)  # the peer is closed once what came before is through

        def _later(self, item: bytes | None) -> None:
            loop = asyncio.get_running_loop()
            self.late.append((loop.time() + one_way, item))
            if self.timer is None:
                self.timer = loop.call_at(self.late[0][0], self._flush)

        def _flush(self) -> None:
            self.timer = None
            loop = asyncio.get_running_loop()
            peer = self.peer.transport if self.peer is not None else None
            if peer is None:  # the provider side is still connecting
                self.timer = loop.call_later(0.001, self._flush)
                return
            while self.late and self.late[0][0] <= loop.time():
                item = self.late.popleft()[1]
                if item is None:
                    peer.close()  # after what is buffered has been written
                    self.late.clear()
                    return
                if not peer.is_closing():
                    peer.write(item)
            if self.late:
                self.timer = loop.call_at(self.late[0][0], self._flush)

    async def link(client: Side) -> None:
        await asyncio.sleep(one_way)
        provider = Side()
        provider.peer, client.peer = client, provider
        try:
            await asyncio.get_running_loop().create_connection(lambda: provider, HOST, target)
        except OSError:
            if client.transport is not None:
                client.transport.close()

    def accept() -> Side:
        client = Side()
        tasks.add(task := asyncio.get_running_loop().create_task(link(client)))
        task.add_done_callback(tasks.discard)
        return client

    tasks: set[asyncio.Task[None]] = set()

    serve_until_stopped(accept, port)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--serve-provider":
    serve_provider(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    sys.exit(0)
if __name__ == "__main__" and len(sys.argv) == 10 and sys.argv[1] == "--serve-forwarder":
    serve_forwarder(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6],
                    sys.argv[7], int(sys.argv[8]), json.loads(sys.argv[9]))
    sys.exit(0)
if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--serve-delay":
    serve_delay(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    sys.exit(0)

sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402

from bench.postfix_relay import PostfixRelay  # noqa: E402
from bench.postfix_relay import missing as postfix_missing  # noqa: E402
from gateway.tls import write_self_signed  # noqa: E402
from gateway.users import User, hash_password, load_users, save_users  # noqa: E402
from tests.support import (  # noqa: E402
    ADDRESS,
    PASSWORD,
    USER,
    PliProcess,
    free_port,
    make_gateway,
    wait_for_port,
)

TARGET_FORWARD = 0.8  # Pli relays at least 0.8 times what the bare forwarder relays
TARGET_POSTFIX = 2.0  # and at least twice what Debian's Postfix relays, same load
MESSAGE_SIZE = 4096
# A colleague in the MSSanté trust space: the policy `pli init` installs passes it as it
# is (anyone else would get a protected copy).
RECIPIENT = "dr.durand@medecin.mssante.fr"
# Pli's shipped delivery settings (3 connections to the provider per upstream account,
# idle ones kept 5 s), except that a deferred message is retried within seconds, so a
# hiccup cannot outlast a run. --senders changes the number of connections.
DELIVERY = "\n[delivery]\nretry_min = 1\nretry_max = 5\n"
PLI_CONNECTIONS = 3  # the shipped [delivery] concurrency, which the forwarder copies


@dataclass(frozen=True)
class Sender:
    """Who a client connection logs in as, and the address it sends from."""

    login: str
    password: str
    address: str


def practitioner(n: int) -> tuple[str, str]:
    """The n-th practitioner's Pli login and address (--accounts): n = 0 is Dr Martin."""
    return (USER, ADDRESS) if n == 0 else (f"praticien{n}", f"praticien{n}@cabinet-martin.fr")


class ProviderProcess:
    def __init__(self, folder: Path, accounts: int) -> None:
        self.accounts = accounts
        self.port = free_port()
        self.cert = folder / "provider-cert.pem"
        self.key = folder / "provider-key.pem"
        write_self_signed(self.cert, self.key, "localhost")
        self.log_path = folder / "provider.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.arrivals: list[float] = []

    def start(self) -> ProviderProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--serve-provider",
                 str(self.port), str(self.cert), str(self.key), str(self.accounts)],
                stdout=subprocess.PIPE, stderr=log)
        threading.Thread(target=self._read, daemon=True).start()
        wait_for_port(self.port)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.arrivals.append(float(line))

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def stop(self) -> None:
        stop_child(self.proc)
        self.proc = None


class NetworkProcess:
    """The delay in front of the provider, for a round-trip time above zero."""

    def __init__(self, provider: ProviderProcess, rtt_ms: float, folder: Path) -> None:
        self.port = free_port()
        self.provider = provider
        self.rtt_ms = rtt_ms
        self.log_path = folder / f"network-{rtt_ms:g}ms.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NetworkProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--serve-delay",
                 str(self.port), str(self.provider.port), str(self.rtt_ms)],
                stdout=log, stderr=log)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        stop_child(self.proc)
        self.proc = None


def stop_child(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- /proc -----------------------------------------------------------------------------

def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


class CpuShares:
    """CPU time used by some processes from now on, as a percentage of one CPU over the
    wall time (a pid of None is this process, where the clients run)."""

    def __init__(self, pids: dict[str, int | None | Callable[[], float]]) -> None:
        self.pids = dict(pids)
        self.start = time.monotonic()
        self.before = {name: self._cpu(pid) for name, pid in self.pids.items()}

    @staticmethod
    def _cpu(pid: int | None | Callable[[], float]) -> float:
        if pid is None:
            return time.process_time()
        if callable(pid):
            return pid()
        try:
            return cpu_seconds(pid)
        except OSError:
            return 0.0

    def percent(self) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self.start)
        return {name: 100 * (self._cpu(pid) - self.before[name]) / wall
                for name, pid in self.pids.items()}


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a live process (and of its children it has reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pids: Callable[[], list[int]]) -> float:
    """CPU of a family of processes (Postfix's master and its daemons, which come and
    go): the master with the children it reaped, plus the children alive now."""
    family = pids()
    if not family:
        return 0.0
    total = cpu_seconds(family[0], children=True)
    for pid in family[1:]:
        try:
            total += cpu_seconds(pid)
        except OSError:  # gone meanwhile: counted in the master's reaped time
            continue
    return total


# -- the load generator ----------------------------------------------------------------

def make_message(seq: int, sender: str) -> bytes:
    head = (
        f"From: <{sender}>\r\n"
        f"To: <{RECIPIENT}>\r\n"
        f"Subject: Benchmark message {seq}\r\n"
        "Date: Mon, 02 Jun 2025 09:00:00 +0200\r\n"
        f"Message-ID: <bench-{seq}-{os.getpid()}@cabinet-martin.fr>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    body = bytearray()
    while len(head) + len(body) + len(line) <= MESSAGE_SIZE - 2:
        body += line
    body += b"x" * (MESSAGE_SIZE - 2 - len(head) - len(body)) + b"\r\n"
    message = head + bytes(body)
    assert len(message) == MESSAGE_SIZE
    return message


@dataclass
class Load:
    sent: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, end of DATA to 250
    timed_out: bool = False


async def send_one(port: int, tls: ssl.SSLContext, sender: Sender, seq: int,
                   load: Load, timeout: float) -> None:
    smtp = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=True, tls_context=tls,
                           timeout=timeout, local_hostname="poste-accueil.cabinet-martin.fr")
    try:
        await smtp.connect()  # greeting, EHLO, STARTTLS, EHLO
        await smtp.login(sender.login, sender.password)
        await smtp.mail(sender.address)
        await smtp.rcpt(RECIPIENT)
        # The last write before DATA's final reply is the message with its ".": the
        # latency runs from that write to the reply.
        protocol = smtp.protocol
        assert protocol is not None
        write = protocol.write
        last_write = 0.0

        def timed_write(data: bytes) -> None:
            nonlocal last_write
            write(data)
            last_write = time.monotonic()

        protocol.write = timed_write  # type: ignore[method-assign]
        await smtp.data(make_message(seq, sender.address))
        load.latencies.append(time.monotonic() - last_write)
        protocol.write = write  # type: ignore[method-assign]
        load.sent += 1
        await smtp.quit()
    except Exception as exc:  # counted and reported; the run goes on
        name = f"{type(exc).__name__}: {str(exc)[:80]}"
        load.errors[name] = load.errors.get(name, 0) + 1
    finally:
        smtp.close()


async def generate(port: int, tls: ssl.SSLContext, senders: list[Sender], messages: int,
                   clients: int, deadline: float) -> Load:
    """Send ``messages``, ``clients`` connections at a time, until ``deadline`` at most;
    client k sends as ``senders[k % len(senders)]``."""
    load = Load()
    counter = iter(range(messages))
    timeout = max(1.0, min(30.0, deadline - time.monotonic()))

    async def client(sender: Sender) -> None:
        for seq in counter:
            if time.monotonic() >= deadline:
                load.timed_out = True
                return
            await send_one(port, tls, sender, seq, load, timeout)

    tasks = [asyncio.create_task(client(senders[k % len(senders)])) for k in range(clients)]
    _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    for task in pending:
        load.timed_out = True
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return load


# -- one run ---------------------------------------------------------------------------

@dataclass
class Run:
    rtt_ms: float  # modelled round trip to the provider (0: plain loopback)
    round: int
    path: str  # "straight", "pli" or "forward" (--floor)
    messages: int
    sent: int = 0
    received: int = 0  # by the provider
    errors: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False
    accepted_seconds: float = 0.0  # start of the load to the last client's QUIT
    received_seconds: float = 0.0  # start of the load to the provider's last 250
    msgs_per_second: float = 0.0   # the throughput the ratio uses (see the docstring)
    accepted_per_second: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    pli_peak_mb: float | None = None
    pli_cpu_ms_per_msg: float | None = None
    provider_peak_mb: float | None = None
    # CPU used during the measured load, in % of one CPU: who holds the machine.
    clients_cpu_pct: float = 0.0
    provider_cpu_pct: float = 0.0
    pli_cpu_pct: float | None = None

    @property
    def wall_seconds(self) -> float:
        return self.accepted_seconds if self.path == "straight" else self.received_seconds


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


async def wait_arrivals(provider: ProviderProcess, count: int, deadline: float) -> None:
    while len(provider.arrivals) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def measure(provider: ProviderProcess, run: Run, port: int, tls: ssl.SSLContext,
            senders: list[Sender], args: argparse.Namespace,
            pli_pid: int | None | Callable[[], float] = None) -> None:
    async def go() -> None:
        if args.warmup:
            before = len(provider.arrivals)
            warm = await generate(port, tls, senders, args.warmup,
                                  min(args.clients, args.warmup), time.monotonic() + 30)
            await wait_arrivals(provider, before + warm.sent, time.monotonic() + 30)
        if provider.proc is not None:
            reset_peak_rss(provider.proc.pid)
        before = len(provider.arrivals)
        assert provider.proc is not None
        cpu = CpuShares({"clients": None, "provider": provider.proc.pid, "pli": pli_pid})
        start = time.monotonic()
        deadline = start + args.timeout
        load = await generate(port, tls, senders, run.messages, args.clients, deadline)
        accepted = time.monotonic()
        await wait_arrivals(provider, before + load.sent, deadline)
        shares = cpu.percent()
        run.clients_cpu_pct, run.provider_cpu_pct = shares["clients"], shares["provider"]
        run.pli_cpu_pct = shares["pli"] if pli_pid is not None else None
        arrivals = provider.arrivals[before:]
        run.sent, run.received, run.errors = load.sent, len(arrivals), load.errors
        run.timed_out = load.timed_out or run.received < run.sent
        run.accepted_seconds = accepted - start
        if run.received < run.sent:  # stopped by the deadline
            run.received_seconds = time.monotonic() - start
        else:
            run.received_seconds = (max(arrivals) if arrivals else accepted) - start
        done = min(run.sent, run.received)
        run.msgs_per_second = done / run.wall_seconds if run.wall_seconds > 0 else 0.0
        run.accepted_per_second = run.sent / run.accepted_seconds
        if load.latencies:
            run.latency_p50_ms = statistics.median(load.latencies) * 1000
            run.latency_p99_ms = percentile(load.latencies, 99) * 1000
            run.latency_max_ms = max(load.latencies) * 1000

    asyncio.run(go())
    if provider.proc is not None:
        run.provider_peak_mb = peak_rss_mb(provider.proc.pid)


def run_straight(provider: ProviderProcess, port: int, rtt: float, rnd: int,
                 args: argparse.Namespace) -> Run:
    run = Run(rtt, rnd, "straight", args.messages)
    senders = [Sender(provider_account(n), PROVIDER_PASSWORD, practitioner(n)[1])
               for n in range(args.accounts)]
    measure(provider, run, port, provider.client_context(), senders, args)
    return run


def run_pli(provider: ProviderProcess, port: int, rtt: float, rnd: int,
            args: argparse.Namespace, work: Path) -> Run:
    folder = work / f"pli-{rtt:g}ms-{rnd}"
    gw = make_gateway(folder, provider_port=port, upstream_security="starttls",
                      policy=None)  # keep the policy `pli init` installs
    password_file = folder / "upstream-password"
    password_file.write_text(PROVIDER_PASSWORD + "\n")
    password_file.chmod(0o600)
    config = gw.config.read_text()
    for old, new in (
        ('ca_file = "tls/cert.pem"', f"ca_file = {json.dumps(str(provider.cert))}"),
        ('# username = "cabinet@example.fr"', f"username = {json.dumps(PROVIDER_USER)}"),
        ('# password_file = "upstream-password"', 'password_file = "upstream-password"'),
    ):
        assert old in config, f"the pli.toml `pli init` writes no longer has {old!r}"
        config = config.replace(old, new)
    # make_gateway ends the file with the test suite's fast [delivery] settings (idle
    # provider connections closed after 0.5 s); measure the shipped ones instead.
    config = config[:config.index("\n[delivery]\n")] + DELIVERY
    if args.senders is not None:
        config += f"concurrency = {args.senders}\n"
    gw.config.write_text(with_accounts(config, args.accounts))
    add_practitioners(folder / "users.toml", args.accounts)
    pli = PliProcess(gw, folder / "pli.log")
    try:
        pli.start()
    except AssertionError:
        tail = pli.log()[-2000:]
        raise SystemExit(f"`pli run` did not open its port; the end of its log:\n{tail}") from None
    run = Run(rtt, rnd, "pli", args.messages)
    try:
        assert pli.proc is not None
        cpu_before = cpu_seconds(pli.proc.pid)
        senders = [Sender(login, PASSWORD, address)
                   for login, address in map(practitioner, range(args.accounts))]
        measure(provider, run, gw.submission_port, gw.client_context(), senders, args,
                pli_pid=pli.proc.pid)
        run.pli_peak_mb = peak_rss_mb(pli.proc.pid)
        used = cpu_seconds(pli.proc.pid) - cpu_before
        run.pli_cpu_ms_per_msg = used * 1000 / max(1, run.sent + args.warmup)
    finally:
        pli.kill(signal.SIGTERM)
    return run


def run_forward(provider: ProviderProcess, port: int, rtt: float, rnd: int,
                args: argparse.Namespace, work: Path) -> Run:
    """The same load through the bare forwarder (--floor), with Pli's connection count."""
    folder = work / f"forward-{rtt:g}ms-{rnd}"
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    write_self_signed(cert, key, "localhost")
    senders = [Sender(login, PASSWORD, address)
               for login, address in map(practitioner, range(args.accounts))]
    logins = {practitioner(n)[1]: provider_account(n) for n in range(args.accounts)}
    listen = free_port()
    with (folder / "forwarder.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-forwarder", str(listen),
             str(port), str(cert), str(key), str(provider.cert), PASSWORD,
             str(args.senders or PLI_CONNECTIONS), json.dumps(logins)],
            stdout=log, stderr=log)
    run = Run(rtt, rnd, "forward", args.messages)
    try:
        wait_for_port(listen)
        cpu_before = cpu_seconds(proc.pid)
        measure(provider, run, listen, ssl.create_default_context(cafile=str(cert)), senders,
                args, pli_pid=proc.pid)
        run.pli_peak_mb = peak_rss_mb(proc.pid)
        used = cpu_seconds(proc.pid) - cpu_before
        run.pli_cpu_ms_per_msg = used * 1000 / max(1, run.sent + args.warmup)
    finally:
        stop_child(proc)
    return run


def run_postfix(provider: ProviderProcess, port: int, rtt: float, rnd: int,
                args: argparse.Namespace, work: Path) -> Run:
    """The same load through Debian's Postfix (--postfix): submission with STARTTLS and
    Cyrus SASL, relaying to the same provider (bench/postfix_relay.py)."""
    folder = work / f"postfix-{rtt:g}ms-{rnd}"
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    write_self_signed(cert, key, "localhost")
    listen = free_port()
    logins = [(practitioner(n), provider_account(n)) for n in range(args.accounts)]
    relay = PostfixRelay(folder / "instance", listen, port, cert, key,
                         [(login, PASSWORD) for (login, _), _ in logins],
                         {address: (account, PROVIDER_PASSWORD)
                          for (_, address), account in logins})
    run = Run(rtt, rnd, "postfix", args.messages)
    try:
        relay.start()
        wait_for_port(listen)
        senders = [Sender(login, PASSWORD, address) for (login, address), _ in logins]
        before = tree_cpu_seconds(relay.pids)
        measure(provider, run, listen, ssl.create_default_context(cafile=str(cert)), senders,
                args, pli_pid=lambda: tree_cpu_seconds(relay.pids))
        used = tree_cpu_seconds(relay.pids) - before
        run.pli_cpu_ms_per_msg = used * 1000 / max(1, run.sent + args.warmup)
        run.pli_peak_mb = sum(filter(None, (peak_rss_mb(pid) for pid in relay.pids())))
    finally:
        relay.stop()
    return run


def with_accounts(config: str, accounts: int) -> str:
    """Give practitioners 1 to accounts-1 each their own upstream account (their own
    mailbox at the provider), ahead of the default one that Dr Martin keeps."""
    start = config.index("[[upstream]]\n")
    end = config.index("\n[", start + 1)
    default = config[start:end]
    assert 'name = "default"\nsenders = ["*"]' in default, "pli init's upstream changed"
    own = ""
    for n in range(1, accounts):
        block = default.replace('name = "default"\nsenders = ["*"]',
                                f'name = "praticien{n}"\n'
                                f'senders = ["{practitioner(n)[1]}"]')
        own += block.replace(json.dumps(PROVIDER_USER), json.dumps(provider_account(n))) + "\n"
    return config[:start] + own + config[start:]


def add_practitioners(users_file: Path, accounts: int) -> None:
    users = load_users(users_file)
    password = hash_password(PASSWORD)
    for n in range(1, accounts):
        login, address = practitioner(n)
        users[login] = User(login, password, (address,))
    save_users(users_file, users)


# -- report ----------------------------------------------------------------------------

def summary(runs: list[Run]) -> dict[str, object]:
    """Per round-trip time: each path's figures, and Pli's against each other path in
    the same rounds (medians of the rounds' ratios)."""

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    def versus(path: str) -> list[float]:
        rounds: dict[int, dict[str, Run]] = {}
        for run in runs:
            rounds.setdefault(run.round, {})[run.path] = run
        return [r["pli"].msgs_per_second / r[path].msgs_per_second
                for r in rounds.values()
                if "pli" in r and path in r and r[path].msgs_per_second]

    paths = {}
    for path in ("straight", "pli", "forward", "postfix"):
        chosen = [r for r in runs if r.path == path]
        if not chosen:
            continue
        paths[path] = {
            "msgs_per_second": med([r.msgs_per_second for r in chosen]),
            "p50_ms": med([r.latency_p50_ms for r in chosen]),
            "p99_ms": med([r.latency_p99_ms for r in chosen]),
            "cpu_ms_per_msg": (med([r.pli_cpu_ms_per_msg for r in chosen
                                    if r.pli_cpu_ms_per_msg is not None])
                               if path != "straight" else None),
            "peak_mb": max((r.pli_peak_mb or 0.0 for r in chosen), default=0.0),
        }
    over_forward, over_postfix, over_straight = versus("forward"), versus("postfix"), \
        versus("straight")
    return {
        "rtt_ms": runs[0].rtt_ms,
        "rounds": len({r.round for r in runs}),
        "paths": paths,
        "pli_over_forward": med(over_forward) if over_forward else None,
        "pli_over_forward_rounds": over_forward,
        "pli_over_postfix": med(over_postfix) if over_postfix else None,
        "pli_over_postfix_rounds": over_postfix,
        "pli_over_straight": med(over_straight) if over_straight else None,
        "targets": {"forward": TARGET_FORWARD, "postfix": TARGET_POSTFIX},
        "provider_peak_mb": max((r.provider_peak_mb or 0.0 for r in runs), default=0.0),
        "lost": sum(max(0, r.sent - r.received) for r in runs),
        "errors": sum(sum(r.errors.values()) for r in runs),
        "timed_out": sum(r.timed_out for r in runs),
    }


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_report(runs: list[Run], results: list[dict[str, object]],
                 args: argparse.Namespace) -> None:
    accounts = ("one sender and provider account" if args.accounts == 1 else
                f"{args.accounts} senders, each with its own provider account")
    print(f"\n{args.messages} messages of {MESSAGE_SIZE} bytes per run, {args.clients} "
          f"clients at once (STARTTLS + AUTH + 1 message each), {accounts}, "
          f"{os.cpu_count()} CPUs")
    header = (f"{'RTT':>4} {'round':>5}  {'path':<8} {'sent':>5} {'in':>5} {'err':>4} "
              f"{'wall s':>7} "
              f"{'msg/s':>7} {'acc/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'relay MB':>8} "
              f"{'CPU ms':>7} {'prov MB':>7} {'%CPU: clients':>13} {'prov':>5} {'relay':>5}")
    print(header)
    print("-" * len(header))
    for r in runs:
        pli = r.path != "straight"
        print(f"{r.rtt_ms:>4g} {r.round:>5}  {r.path:<8} {r.sent:>5} {r.received:>5} "
              f"{sum(r.errors.values()):>4} {r.wall_seconds:>7.2f} {r.msgs_per_second:>7.1f} "
              f"{(f'{r.accepted_per_second:.1f}' if pli else '-'):>7} "
              f"{r.latency_p50_ms:>7.1f} {r.latency_p99_ms:>7.1f} {mb(r.pli_peak_mb):>8} "
              f"{(f'{r.pli_cpu_ms_per_msg:.1f}' if r.pli_cpu_ms_per_msg else '-'):>7} "
              f"{mb(r.provider_peak_mb):>7} {r.clients_cpu_pct:>13.0f} {r.provider_cpu_pct:>5.0f} "
              f"{(f'{r.pli_cpu_pct:.0f}' if r.pli_cpu_pct is not None else '-'):>5}")
    for r in runs:
        if r.timed_out:
            print(f"  RTT {r.rtt_ms:g} ms round {r.round} {r.path}: "
                  f"stopped by --timeout {args.timeout:g} s "
                  f"({r.sent} of {r.messages} accepted, {r.received} received by the provider)")
        for name, count in r.errors.items():
            print(f"  RTT {r.rtt_ms:g} ms round {r.round} {r.path}: {count} x {name}")
    print()
    for result in results:
        print_summary(result)


def print_summary(result: dict[str, Any]) -> None:
    rtt = (f"round trip to the provider {result['rtt_ms']:g} ms" if result["rtt_ms"]
           else "provider on loopback")
    print(f"{rtt}, medians of {result['rounds']} round(s):")
    names = {"straight": "straight to the provider", "pli": "through Pli",
             "forward": "bare forwarder", "postfix": "Debian's Postfix"}
    for path, figures in result["paths"].items():
        cpu = figures["cpu_ms_per_msg"]
        print(f"  {names[path]:<26} {figures['msgs_per_second']:7.1f} msg/s   end of DATA to "
              f"250 p50 {figures['p50_ms']:5.1f} ms, p99 {figures['p99_ms']:6.1f} ms"
              + (f"   CPU {cpu:.2f} ms/msg" if cpu is not None else ""))
    for other, key, target in (("bare forwarder", "pli_over_forward", TARGET_FORWARD),
                               ("Postfix", "pli_over_postfix", TARGET_POSTFIX)):
        ratio = result[key]
        if ratio is not None:
            each = ", ".join(f"{r:.2f}" for r in result[key + "_rounds"])
            print(f"  Pli / {other}: {ratio:.2f} (rounds: {each}; target at least "
                  f"{target:g}: {'met' if ratio >= target else 'NOT met'})")
    if result["pli_over_straight"] is not None:
        print(f"  Pli / straight: {result['pli_over_straight']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400, help="messages per run (400)")
    parser.add_argument("--clients", type=int, default=20, help="clients at once (20)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of (straight, pli); the ratio is their median (2)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="messages sent before each measured run, not counted (20)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds allowed per run, delivery included (60)")
    parser.add_argument("--rtt", type=rtt_list, default=[0.0], metavar="MS[,MS...]",
                        help="round-trip times to the provider to model, in ms; 0 is plain "
                             "loopback (0)")
    parser.add_argument("--senders", type=int, default=None,
                        help="Pli's connections to the provider at once per upstream "
                             "account ([delivery] concurrency); Pli's own default if not "
                             "given")
    parser.add_argument("--accounts", type=int, default=1,
                        help="practitioners sending at once, each with their own login, "
                             "address and upstream account (their mailbox at the "
                             "provider); the clients take turns among them (1)")
    parser.add_argument("--floor", action="store_true",
                        help="each round also sends the load through a bare forwarder "
                             "(aiosmtpd in, aiosmtplib out, no spool, policy or log) to "
                             "show the most a gateway on these libraries reaches here")
    parser.add_argument("--postfix", action="store_true",
                        help="each round also sends the load through Debian's Postfix "
                             "(submission with STARTTLS and Cyrus SASL, relaying to the "
                             "same provider); needs root and postfix, sasl2-bin")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the work files (Pli's spool: put it on the disk "
                             "to measure); a temporary folder by default")
    parser.add_argument("--keep", action="store_true", help="keep the work files and logs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.messages < 1 or args.clients < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--messages, --clients and --rounds must be at least 1, --warmup at least 0")
    if args.senders is not None and not 1 <= args.senders <= 64:
        parser.error("--senders must be from 1 to 64, as in pli.toml")
    if not 1 <= args.accounts <= args.clients:
        parser.error("--accounts must be from 1 to the number of clients")
    if args.postfix and postfix_missing():
        parser.error(f"--postfix: {postfix_missing()}")

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pli-bench-", dir=args.dir))
    runs: list[Run] = []
    provider = ProviderProcess(work, args.accounts)
    network: NetworkProcess | None = None
    try:
        provider.start()
        for rtt in args.rtt:
            port = provider.port
            if rtt:
                network = NetworkProcess(provider, rtt, work).start()
                port = network.port
            for rnd in range(1, args.rounds + 1):
                runs.append(run_straight(provider, port, rtt, rnd, args))
                runs.append(run_pli(provider, port, rtt, rnd, args, work))
                if args.floor:
                    runs.append(run_forward(provider, port, rtt, rnd, args, work))
                if args.postfix:
                    runs.append(run_postfix(provider, port, rtt, rnd, args, work))
                if not args.json:
                    print(f"RTT {rtt:g} ms round {rnd}: " + ", ".join(
                        f"{r.path} {r.msgs_per_second:.1f} msg/s"
                        for r in runs if r.rtt_ms == rtt and r.round == rnd), flush=True)
            if network is not None:
                network.stop()
                network = None
    finally:
        if network is not None:
            network.stop()
        provider.stop()
        if args.keep:
            print(f"work files and logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    results = [summary([r for r in runs if r.rtt_ms == rtt]) for rtt in args.rtt]
    if args.json:
        print(json.dumps({"messages": args.messages, "clients": args.clients,
                          "accounts": args.accounts,
                          "message_size": MESSAGE_SIZE, "cpus": os.cpu_count(),
                          "runs": [asdict(r) for r in runs], "summaries": results}, indent=1))
    else:
        print_report(runs, results, args)
    failed = any(r["lost"] or r["errors"] or r["timed_out"] for r in results)
    return 1 if failed else 0


def rtt_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if any(not 0 <= v <= 1000 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError("each round-trip time once, from 0 to 1000 ms")
    return values


if __name__ == "__main__":
    sys.exit(main())
