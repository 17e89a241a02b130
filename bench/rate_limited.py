#!/usr/bin/env python3
"""A batch over the provider's rate: 200 messages to one account that may send 30 a
minute (Microsoft 365's limit per mailbox), through a real `pli run`.

The provider (aiosmtpd on loopback, in this process) counts as Microsoft 365 does: a
MAIL FROM beyond ``--per-minute`` in the last 60 seconds is refused with a 4.7.0 rate
answer, as is a fourth connection at once. Pli has ``max_messages_per_minute`` set to
the same figure, the shipped delivery settings (3 connections for the account, retries
after 5 minutes) and the policy `pli init` installs; the messages go to a colleague on
MSSanté, which that policy passes. They are submitted as fast as the mail client can
(STARTTLS, AUTH, several messages per connection), then the script waits until the
provider has them all.

Figures: how long submitting took and how long delivering took (against the least the
limit allows, (N - 1) x 60 / limit seconds), how many arrived in each minute, the most
in any 60-second window, the gaps between MAIL commands, what the provider refused, and
whether each message arrived exactly once.

    .venv/bin/python bench/rate_limited.py [--messages 200] [--per-minute 30]

A full run at 30 a minute takes about 7 minutes; ``--per-minute 300`` runs the same in
about 40 seconds. Loopback only; bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import smtplib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    LoopThread,
    PliProcess,
    Provider,
    SinkHandler,
    make_gateway,
    wait_until,
)

COLLEAGUE = "dr.bernard@medecin.mssante.fr"  # on MSSanté: the policy passes it


@dataclass
class CountingProvider(SinkHandler):
    """Refuses what a mailbox over its limits gets refused at Microsoft 365."""

    per_minute: int = 30
    most_connections: int = 3
    accepted: list[float] = field(default_factory=list)
    refused: list[tuple[float, str]] = field(default_factory=list)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        now = time.monotonic()
        if self.open_now > self.most_connections:
            reply = "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"
            self.refused.append((now, reply))
            return reply
        recent = [t for t in self.accepted[-self.per_minute:] if t > now - 60]
        if len(recent) >= self.per_minute:
            reply = "450 4.7.0 Message submission rate limit exceeded, slow down"
            self.refused.append((now, reply))
            return reply
        self.accepted.append(now)
        return await super().handle_MAIL(server, session, envelope, address, options)


def message(seq: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = ADDRESS
    msg["To"] = COLLEAGUE
    msg["Subject"] = f"Résultat {seq}"
    msg["Message-ID"] = f"<bench-{seq}@cabinet-martin.fr>"
    msg.set_content(f"Bonjour,\n\nrésultat d'analyse n° {seq}.\n")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def submit(port: int, context: Any, seqs: range) -> None:
    with smtplib.SMTP(HOST, port, timeout=60) as client:
        client.starttls(context=context)
        client.login(USER, PASSWORD)
        for seq in seqs:
            client.sendmail(ADDRESS, [COLLEAGUE], message(seq))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--per-minute", type=int, default=30,
                        help="the account's limit, in Pli and at the provider (default 30)")
    parser.add_argument("--clients", type=int, default=4,
                        help="mail client connections submitting at once")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="pli-rate-"))
    loop = LoopThread()
    gw = make_gateway(folder / "pli", policy=None)
    config = gw.config.read_text()
    # The shipped delivery settings, not the tests' fast retries.
    config = config.replace("retry_min = 0.3\nretry_max = 1.0\nscan_interval = 0.2\n"
                            "idle_close = 0.5\n", "")
    anchor = "verify_certificate = true\n"
    config = config.replace(anchor, anchor + f"max_messages_per_minute = {args.per_minute}\n")
    gw.config.write_text(config)
    handler = CountingProvider(per_minute=args.per_minute)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False)
    provider.handler = handler
    provider.start()
    pli = PliProcess(gw, folder / "pli.log").start()
    try:
        started = time.monotonic()
        share = -(-args.messages // args.clients)

        async def clients() -> None:
            await asyncio.gather(*(asyncio.to_thread(
                submit, gw.submission_port, gw.client_context(),
                range(n * share, min(args.messages, (n + 1) * share)))
                for n in range(args.clients)))
        asyncio.run(clients())
        submitted = time.monotonic() - started
        wait_until(lambda: len(provider.received) >= args.messages, timeout=args.timeout,
                   step=0.5)
        time.sleep(2)  # anything sent twice would come now
    finally:
        pli.kill()
        provider.stop()
        loop.close()

    arrivals = handler.accepted
    first, last = arrivals[0], arrivals[-1]
    seqs = [int(r.content.split(b"<bench-", 1)[1].split(b"@", 1)[0])
            for r in provider.received]
    once = sorted(seqs) == list(range(args.messages))
    per_minute = [0] * (int((last - first) // 60) + 1)
    for t in arrivals:
        per_minute[int((t - first) // 60)] += 1
    most = max(sum(1 for u in arrivals if t - 60 < u <= t) for t in arrivals)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    least = (args.messages - 1) * 60 / args.per_minute
    print(f"{args.messages} messages, account limited to {args.per_minute} a minute, "
          f"3 connections")
    print(f"submitted in {submitted:.1f} s ({args.messages / submitted:.1f} msg/s); "
          f"delivered from the first to the last in {last - first:.1f} s "
          f"(the limit allows no less than {least:.1f} s)")
    print(f"arrivals per minute: {per_minute}")
    print(f"most in any 60 s: {most} (limit {args.per_minute}); gaps between MAIL commands: "
          f"min {min(gaps):.3f} s, median {statistics.median(gaps):.3f} s, "
          f"max {max(gaps):.3f} s")
    print(f"refused by the provider: {len(handler.refused)}"
          + (f" ({handler.refused[0][1]})" if handler.refused else ""))
    print(f"each message arrived exactly once: {'yes' if once else 'no'}; most "
          f"connections open at once: {handler.most_open}")
    return 0 if once and not handler.refused else 1


if __name__ == "__main__":
    sys.exit(main())
