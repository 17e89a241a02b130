"""Pli past one machine: protected 1 MB messages per second and portal downloads per
second, with one instance and with two behind HAProxy, files+SQLite against the shared
engines (PostgreSQL for the index, a shared folder or Swift for the objects), in one run.

    .venv/bin/python bench/scale.py                    # 30 messages, 120 downloads each
    .venv/bin/python bench/scale.py --messages 60 --downloads 240 --only swift

Everything runs on this machine, on loopback: PostgreSQL 15 (fsync on, as in
production), a Swift All In One (deploy/scale/swift-aio), HAProxy with
deploy/scale/haproxy.cfg as it is, each `pli run` a real process, Postfix's smtp-sink as
the provider. For each set-up:

- messages: 4 mail clients, each with one SMTP session (STARTTLS, login) through
  HAProxy, send protected messages carrying a 1 MB PDF-like attachment (random bytes)
  until the count is reached; the time runs from the first MAIL to the last 250 (the
  message sealed, the index row committed, the notice spooled, fsync'd);
- downloads: 8 browsers at once, through HAProxy, each download a grant (POST, counted in
  the index) and the 1 MB document's ciphertext (GET), spread over the links just made;
  the access code is entered once per link before the clock starts.

Each engine's CPU share is its processes' CPU time (user + system, from /proc, children
included) over the phase, divided by all of them together; "load" is this script's own
(the clients). On two cores, the engines and the clients share the same two cores:
two instances here measure the cost of sharing, not the gain of a second machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import smtplib
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from gateway.app import build_vault  # noqa: E402
from tests import swiftaio  # noqa: E402
from tests.engines import Postgres, running_postgres  # noqa: E402
from tests.scale.cluster import CODE, Cluster, ShareStore, running_cluster, share_files, share_swift  # noqa: E402
from tests.support import ADDRESS, HOST, PASSWORD, USER, SmtpSink  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024


@dataclass(frozen=True)
class SetUp:
    name: str
    index: str  # "sqlite" or "postgresql"
    store: str  # "files" or "swift"
    instances: int


SETUPS = (
    SetUp("files+SQLite, 1 instance", "sqlite", "files", 1),
    SetUp("files+PostgreSQL, 1 instance", "postgresql", "files", 1),
    SetUp("files+PostgreSQL, 2 instances", "postgresql", "files", 2),
    SetUp("Swift+PostgreSQL, 1 instance", "postgresql", "swift", 1),
    SetUp("Swift+PostgreSQL, 2 instances", "postgresql", "swift", 2),
)


# -- CPU of process trees -------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def tree_cpu(roots: list[int]) -> float:
    tree = _children()
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(tree.get(pid, []))
    return sum(_cpu(p) for p in seen)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class CpuMeter:
    """CPU seconds of each engine's processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, engines: dict[str, Callable[[], list[int]]]) -> None:
        self.engines = engines
        self.before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: tree_cpu(pids()) for name, pids in self.engines.items()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now["load"] = usage.ru_utime + usage.ru_stime
        return now

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> dict[str, float]:
        after = self._now()
        return {name: after[name] - self.before.get(name, 0.0) for name in after}


# -- load ------------------------------------------------------------------------------------

def protected_bytes(n: int, attachment: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = f"Dr Martin <{ADDRESS}>"
    message["To"] = f"patient{n}@example.org"
    message["Subject"] = f"Résultats [code:{CODE}]"
    message["Date"] = formatdate(localtime=True)
    message.set_content("Bonjour, voici le compte rendu.")
    message.add_attachment(attachment, maintype="application", subtype="pdf",
                           filename="compte-rendu.pdf")
    return message.as_bytes()


def send_messages(cluster: Cluster, count: int, clients: int) -> float:
    """Seconds to have ``count`` protected messages taken, by ``clients`` sessions."""
    attachment = os.urandom(MB)
    messages = [protected_bytes(n, attachment) for n in range(count)]
    context = next(iter(cluster.instances.values())).gw.client_context()
    lock = threading.Lock()
    errors: list[BaseException] = []
    ready = threading.Barrier(clients + 1)

    def client() -> None:
        try:
            with smtplib.SMTP(HOST, cluster.submission_port, timeout=60) as smtp:
                smtp.starttls(context=context)
                smtp.login(USER, PASSWORD)
                ready.wait()
                while True:
                    with lock:
                        if not messages:
                            return
                        data = messages.pop()
                    smtp.sendmail(ADDRESS, ["patient@example.org"], data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}")
    return elapsed


async def download(cluster: Cluster, links: list[tuple[str, str]], count: int,
                   browsers: int) -> float:
    base = f"http://{HOST}:{cluster.portal_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                     connector=aiohttp.TCPConnector(limit=browsers)) as http:
        cookies: dict[str, str] = {}
        for link_id, _ in links:
            async with http.post(f"{base}/api/l/{link_id}/code", json={"code": CODE}) as r:
                assert r.status == 200, await r.text()
                morsel = r.cookies[f"pli_{link_id}"]
                cookies[link_id] = f"{morsel.key}={morsel.value}"
        work = [links[n % len(links)] for n in range(count)]

        async def browser() -> None:
            while work:
                link_id, object_id = work.pop()
                headers = {"Cookie": cookies[link_id]}
                async with http.post(f"{base}/api/l/{link_id}/o/{object_id}/grant", json={},
                                     headers=headers) as r:
                    assert r.status == 200, await r.text()
                    grant = (await r.json())["grant"]
                async with http.get(f"{base}/api/l/{link_id}/o/{object_id}",
                                    headers={"Authorization": f"Bearer {grant}"}) as r:
                    assert r.status == 200
                    size = 0
                    async for chunk in r.content.iter_chunked(256 * 1024):
                        size += len(chunk)
                    assert size > MB

        began = time.perf_counter()
        await asyncio.gather(*(browser() for _ in range(browsers)))
        return time.perf_counter() - began


# -- one set-up --------------------------------------------------------------------------------

@dataclass
class Result:
    setup: SetUp
    messages_per_s: float
    downloads_per_s: float
    send_cpu: dict[str, float]
    download_cpu: dict[str, float]
    pli_rss_mb: list[float] = field(default_factory=list)


def measure(setup: SetUp, folder: Path, postgres: Postgres, swift: swiftaio.SwiftAio | None,
            sink: SmtpSink, messages: int, downloads: int) -> Result:
    share: ShareStore = share_files
    if setup.store == "swift":
        assert swift is not None
        share = share_swift(swift, f"pli-bench-{uuid.uuid4().hex[:8]}")
    names = ("a", "b")[:setup.instances]
    index = postgres if setup.index == "postgresql" else None
    folder.mkdir(parents=True)
    with running_cluster(folder, index, share, None, names=names,
                         provider_port=sink.port) as cluster:
        engines: dict[str, Callable[[], list[int]]] = {
            "pli": lambda: [i.process.proc.pid for i in cluster.instances.values()
                            if i.process is not None and i.process.proc is not None],
            "haproxy": lambda: [cluster.haproxy.pid] if cluster.haproxy else [],
            "provider": lambda: [sink.proc.pid] if sink.proc else [],
        }
        if setup.index == "postgresql":
            engines["postgresql"] = lambda: [int((postgres.folder / "postmaster.pid")
                                                 .read_text().split()[0])]
        if setup.store == "swift" and swift is not None:
            engines["swift"] = lambda: [int(p.read_text()) for p in
                                        (swift.folder / "run").glob("*.pid")]
        meter = CpuMeter(engines)
        meter.start()
        sent = send_messages(cluster, messages, clients=4)
        send_cpu = meter.stop()
        first = next(iter(cluster.instances.values()))
        vault = build_vault(first.gw.settings())
        try:
            links = [(info.id, info.files[0].id) for info in vault.links() if info.files]
        finally:
            vault.close()
        assert len(links) >= messages, f"{len(links)} links for {messages} messages"
        meter.start()
        took = asyncio.run(download(cluster, links, downloads, browsers=8))
        download_cpu = meter.stop()
        rss = [rss_mb(i.process.proc.pid) for i in cluster.instances.values()
               if i.process is not None and i.process.proc is not None]
    return Result(setup, messages / sent, downloads / took, send_cpu, download_cpu, rss)


def median_of(results: list[Result]) -> Result:
    """The round with the median message rate, its download rate the median too."""
    by_messages = sorted(results, key=lambda r: r.messages_per_s)
    middle = by_messages[len(results) // 2]
    downloads = sorted(r.downloads_per_s for r in results)[len(results) // 2]
    return Result(middle.setup, middle.messages_per_s, downloads, middle.send_cpu,
                  middle.download_cpu, middle.pli_rss_mb)


def shares(cpu: dict[str, float]) -> str:
    total = sum(cpu.values()) or 1.0
    return ", ".join(f"{name} {100 * seconds / total:.0f}%"
                     for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]))


@contextmanager
def engines(folder: Path, want_swift: bool) -> Iterator[tuple[Postgres, swiftaio.SwiftAio | None,
                                                              SmtpSink]]:
    with ExitStack() as stack:
        postgres = stack.enter_context(running_postgres(fast=False))
        swift = None
        if want_swift:
            reason = swiftaio.missing()
            if reason:
                raise SystemExit(reason)
            swift = swiftaio.start(folder / "swift")
            stack.callback(swift.stop)
        sink = SmtpSink().start()
        stack.callback(sink.stop)
        yield postgres, swift, sink


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--downloads", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3,
                        help="each set-up this many times, in turn; medians are printed")
    parser.add_argument("--only", choices=("files", "swift"),
                        help="only the set-ups with this object store (and the baseline)")
    args = parser.parse_args()
    chosen = [s for s in SETUPS if args.only is None or s.store == args.only
              or s.name == SETUPS[0].name]
    rounds: dict[str, list[Result]] = {s.name: [] for s in chosen}
    with tempfile.TemporaryDirectory(prefix="pli-bench-") as tmp:
        folder = Path(tmp)
        with engines(folder, any(s.store == "swift" for s in chosen)) as (pg, swift, sink):
            for round_ in range(args.rounds):
                for n, setup in enumerate(chosen):
                    print(f"round {round_ + 1}: {setup.name}...", file=sys.stderr, flush=True)
                    rounds[setup.name].append(measure(
                        setup, folder / f"r{round_}-setup{n}", pg, swift, sink,
                        args.messages, args.downloads))
    results = [median_of(rounds[s.name]) for s in chosen]
    base = results[0]
    print(f"\n{args.messages} protected 1 MB messages (4 SMTP sessions), {args.downloads} "
          f"downloads of 1 MB (8 at once), through HAProxy; {os.cpu_count()} cores; "
          f"medians of {args.rounds} rounds\n")
    print("| set-up | messages/s | ratio | downloads/s | ratio | pli RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r.setup.name} | {r.messages_per_s:.1f} | "
              f"{r.messages_per_s / base.messages_per_s:.2f} | {r.downloads_per_s:.1f} | "
              f"{r.downloads_per_s / base.downloads_per_s:.2f} | "
              f"{', '.join(f'{m:.0f}' for m in r.pli_rss_mb)} |")
    print("\nCPU share of each engine (messages; downloads):\n")
    for r in results:
        print(f"- {r.setup.name}: {shares(r.send_cpu)}; {shares(r.download_cpu)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
