"""Large submissions through a real `pli run` with the default policy: the wait after the
final dot against what the same work costs done plainly, and Pli's memory.

    .venv/bin/python bench/large_message.py                      # 100 MiB, protected
    .venv/bin/python bench/large_message.py --attachment-mb 40 --clients 3
    .venv/bin/python bench/large_message.py --attachment-mb 1024  # max_message_size raised
    .venv/bin/python bench/large_message.py --oversize            # DATA past SIZE
    .venv/bin/python bench/large_message.py --objects swift       # the vault on Swift

Each client sends one message with one attachment of random bytes to a patient (so the
default policy protects it: the attachment is decoded, sealed into the vault and fsync'd
before the 250). Printed, side by side from the same run:

- the wait after the final dot (what Thunderbird limits to 100 s), median of the clients;
- the *plain* cost of the same work in this process, on the same disk: decoding the
  attachment with the standard library's base64 (binascii.a2b_base64), sealing it with the
  vault's AES-256-GCM records and writing and fsyncing the result: the wait should be no
  more than that;
- Pli's resident memory at rest (after a warm-up message) and its peak during the run
  (VmHWM, reset before), and the difference;
- with --oversize, DATA larger than max_message_size: the reply (552) and how much larger
  Pli's resident memory is afterwards.

With ``--objects swift`` the vault's objects go to a Swift All In One started for the run
(deploy/scale/swift-aio, plain HTTP on loopback, its servers' memory not counted in
Pli's); the plain cost is still measured on the local disk.

The client streams its message (generated as it is sent), so the client's own memory
does not limit the sizes measured. Loopback only: a provider on 127.0.0.1 receives the
notices and receipts.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.vault.format import encrypt_object  # noqa: E402
from tests.support import (  # noqa: E402
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

CHUNK = 57 * 16384  # random bytes per base64 block: whole lines of 76 characters
PATIENT = "patient@gmail.com"
COLLEAGUE = "dr.durand@cabinet-martin.fr"  # the default policy passes it as it came
RECIPIENT = PATIENT


def status(pid: int, field: str) -> float:
    """A /proc/PID/status figure in MB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def head(n: int) -> bytes:
    return (f"From: {ADDRESS}\r\nTo: {RECIPIENT}\r\nSubject: Imagerie {n}\r\n"
            "Date: Mon, 02 Jun 2025 09:00:00 +0200\r\n"
            f"Message-ID: <large-{n}-{os.getpid()}@cabinet-martin.fr>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="=_large"\r\n\r\n'
            "--=_large\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Bonjour, voici les images.\r\n"
            "--=_large\r\nContent-Type: application/pdf\r\n"
            'Content-Disposition: attachment; filename="scan.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n").encode()


def attachment_blocks(size: int, seed: int) -> list[bytes]:
    """The attachment's random bytes, in blocks (the same for the client and the plain
    measurement: kept only while needed by whoever uses them)."""
    rng = __import__("random").Random(seed)
    blocks = []
    left = size
    while left > 0:
        blocks.append(rng.randbytes(min(CHUNK, left)))
        left -= len(blocks[-1])
    return blocks


def send_message(gw: Gateway, n: int, size: int, out: dict[str, float]) -> None:
    """One client: DATA streamed (base64 lines never start with a dot: nothing to
    stuff), the wait after the final dot timed apart."""
    with smtplib.SMTP(HOST, gw.submission_port, timeout=900) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        client.mail(ADDRESS)
        client.rcpt(RECIPIENT)
        assert client.docmd("DATA")[0] == 354
        started = time.perf_counter()
        client.send(head(n))
        sent = 0
        for block in attachment_blocks(size, n):
            client.send(base64.encodebytes(block).replace(b"\n", b"\r\n"))
            sent += len(block)
        client.send(b"--=_large--\r\n")
        uploaded = time.perf_counter()
        client.send(b".\r\n")
        code, text = client.getreply()
        replied = time.perf_counter()
    out.update(code=code, upload=uploaded - started, after_dot=replied - uploaded)
    if code != 250:
        print(f"client {n}: {code} {text.decode(errors='replace')}", file=sys.stderr)


def plain_cost(size: int, folder: Path) -> float:
    """Decode with the standard library, seal, write and fsync, on the same disk."""
    encoded = [base64.encodebytes(b).replace(b"\n", b"\r\n") for b in attachment_blocks(size, 0)]
    key, base = os.urandom(32), os.urandom(7)
    target = folder / "plain.sealed"
    started = time.perf_counter()
    decoded = (binascii.a2b_base64(block) for block in encoded)
    with target.open("wb") as f:
        for record in encrypt_object(key, "manifest", decoded, base):
            f.write(record)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def oversize(gw: Gateway, pid: int, limit: int) -> None:
    """DATA past SIZE: refused after the final dot, and Pli keeps none of it."""
    before = status(pid, "VmRSS")
    reset_peak(pid)
    with smtplib.SMTP(HOST, gw.submission_port, timeout=900) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        client.mail(ADDRESS)
        client.rcpt(PATIENT)
        assert client.docmd("DATA")[0] == 354
        client.send(head(0))
        line = b"A" * 76 + b"\r\n"
        block = line * 13800  # about 1 MiB
        sent = 0
        while sent < limit + 10 * 1024 * 1024:
            client.send(block)
            sent += len(block)
        client.send(b".\r\n")
        code, _ = client.getreply()
    time.sleep(1)
    after = status(pid, "VmRSS")
    print(f"oversize DATA: {sent / 1e6:.0f} MB sent against a SIZE of {limit / 1e6:.0f} MB: "
          f"reply {code}; Pli's memory {before:.0f} MB before, {after:.0f} MB after "
          f"({after - before:+.1f} MB), peak during it {status(pid, 'VmHWM'):.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attachment-mb", type=float, default=100.0,
                        help="size of each attachment, in MiB (100)")
    parser.add_argument("--clients", type=int, default=1, help="submissions at once (1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements, each the submissions then the plain cost (3)")
    parser.add_argument("--colleague", action="store_true",
                        help="send to a colleague, whom the policy passes: the message is "
                             "queued as it came and delivery streams it whole")
    parser.add_argument("--oversize", action="store_true",
                        help="send DATA past max_message_size instead")
    parser.add_argument("--objects", choices=("files", "swift"), default="files",
                        help="where the vault keeps its objects (files)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where Pli's data folder goes (its disk is the one measured)")
    args = parser.parse_args()
    global RECIPIENT
    RECIPIENT = COLLEAGUE if args.colleague else PATIENT
    size = int(args.attachment_mb * 1024 * 1024)
    folder = Path(tempfile.mkdtemp(prefix="pli-large-", dir=args.dir))
    swift = None
    extra = ""
    if args.objects == "swift":
        from tests import swiftaio

        reason = swiftaio.missing()
        if reason:
            print(reason, file=sys.stderr)
            return 2
        swift = swiftaio.start(folder / "swift", tls=False)
        extra = swift.vault_table("pli-bench")
    loop = LoopThread()
    gw = make_gateway(folder / "pli", policy=None, extra=extra)
    limit = 157286400
    if size * 1.4 > limit:  # a 1 GiB attachment needs the limit raised
        limit = int(size * 1.4) + 1024 * 1024
        config = gw.config.read_text()
        gw.config.write_text(config.replace("max_message_size = 157286400",
                                            f"max_message_size = {limit}"))
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    pli = PliProcess(gw, folder / "pli.log").start()
    assert pli.proc is not None
    pid = pli.proc.pid
    code = 0
    try:
        warm: dict[str, float] = {}
        send_message(gw, 999, 64 * 1024, warm)  # imports, vault index, first seal
        wait_until(lambda: len(provider.received) >= (1 if args.colleague else 2), timeout=60)
        time.sleep(0.5)
        base = len(provider.received)
        idle = status(pid, "VmRSS")
        if args.oversize:
            oversize(gw, pid, limit)
            return 0
        rounds = []
        for rnd in range(args.rounds):
            reset_peak(pid)
            results: list[dict[str, float]] = [{} for _ in range(args.clients)]
            threads = [threading.Thread(target=send_message,
                                        args=(gw, rnd * 100 + n, size, results[n]))
                       for n in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            per = 1 if args.colleague else 2  # the copy, or the notice and the receipt
            expected = base + per * args.clients * (rnd + 1)
            wait_until(lambda n=expected: len(provider.received) >= n, timeout=300)
            peak = status(pid, "VmHWM")  # the delivery included
            plain = plain_cost(size, gw.settings().data_dir)
            rounds.append((results, peak, plain))
            if any(int(r["code"]) != 250 for r in results):
                code = 1
    finally:
        pli.kill(__import__("signal").SIGTERM)
        provider.stop()
        loop.close()
        if swift is not None:
            swift.stop()
    ratios = []
    for n, (results, peak, plain) in enumerate(rounds, 1):
        waits = [r["after_dot"] for r in results]
        wait = statistics.median(waits)
        ratios.append(wait / plain)
        print(f"round {n}: {args.clients} x {args.attachment_mb:g} MiB attachment (a "
              f"{(len(head(0)) + size * 4 / 3 * 78 / 76) / 1e6:.0f} MB submission), "
              f"{'passed to a colleague' if args.colleague else 'protected'}"
              f"{' (objects in Swift)' if args.objects == 'swift' else ''}: "
              f"replies {[int(r['code']) for r in results]}; upload "
              f"{statistics.median(r['upload'] for r in results):.1f} s; wait after the final "
              f"dot {wait:.2f} s (median; {', '.join(f'{w:.2f}' for w in waits)}) against "
              f"{plain:.2f} s to decode it with the standard library, seal, write and fsync "
              f"it: ratio {wait / plain:.2f}; Pli at rest {idle:.0f} MB, peak {peak:.0f} MB "
              f"(+{peak - idle:.0f} MB)")
    worst = max(peak for _, peak, _ in rounds)
    print(f"median ratio {statistics.median(ratios):.2f} over {len(ratios)} round(s); "
          f"Pli's highest peak +{worst - idle:.0f} MB over its {idle:.0f} MB at rest")
    return code


if __name__ == "__main__":
    sys.exit(main())
