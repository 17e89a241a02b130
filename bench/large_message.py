"""One large submission through a real `pli run` with the default policy: how long the
client waits for the 250 after sending DATA (upload included, and after the final dot
alone), and Pli's peak memory.

    .venv/bin/python bench/large_message.py [--attachment-mb 100]

Thunderbird gives up 100 s after the final dot; a practice's NAS is slower than a
development machine, so the figure to watch is how far under that it stays.
Loopback only: a provider on 127.0.0.1 receives the notice and the receipt."""

from __future__ import annotations

import argparse
import os
import re
import signal
import smtplib
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import (ADDRESS, HOST, PASSWORD, USER, LoopThread, PliProcess,  # noqa: E402
                           Provider, make_gateway, wait_until)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attachment-mb", type=float, default=100.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pli-large-"))
    loop = LoopThread()
    gw = make_gateway(folder / "pli", policy=None)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    pli = PliProcess(gw, folder / "pli.log").start()
    try:
        message = EmailMessage()
        message["From"] = ADDRESS
        message["To"] = "patient@gmail.com"
        message["Subject"] = "Imagerie"
        message.set_content("Bonjour, voici les images.")
        message.add_attachment(os.urandom(int(args.attachment_mb * 1024 * 1024)),
                               maintype="application", subtype="pdf", filename="scan.pdf")
        data = message.as_bytes(policy=SMTP)
        assert data.endswith(b"\r\n")  # so that ".\r\n" after it ends DATA
        del message
        with smtplib.SMTP(HOST, gw.submission_port, timeout=600) as client:
            client.starttls(context=gw.client_context())
            client.login(USER, PASSWORD)
            client.mail(ADDRESS)
            client.rcpt("patient@gmail.com")
            assert client.docmd("DATA")[0] == 354
            # Sent by hand so that the upload and the wait after the final dot (the one
            # Thunderbird limits to 100 s) are timed apart.
            started = time.perf_counter()
            client.send(re.sub(rb"(?m)^\.", b"..", data))  # dot-stuffed; ends with CRLF
            uploaded = time.perf_counter()
            client.send(b".\r\n")
            code, _ = client.getreply()
            replied = time.perf_counter()
            waited, upload, after_dot = replied - started, uploaded - started, replied - uploaded
        assert pli.proc is not None
        peak = peak_rss_mb(pli.proc.pid)
        wait_until(lambda: len(provider.received) >= 2, timeout=120)
        relayed = sorted(len(r.content) for r in provider.received)
    finally:
        pli.kill(signal.SIGTERM)
        provider.stop()
        loop.close()
    print(f"submission {len(data) / 1e6:.1f} MB ({args.attachment_mb:g} MB attachment): "
          f"reply {code} after {waited:.1f} s (DATA sent to 250, upload included; "
          f"{upload:.1f} s of upload, then {after_dot:.1f} s after the final dot); "
          f"Pli peak memory {peak:.0f} MB ({peak * 1024 * 1024 / len(data):.1f}x the "
          f"message); relayed {relayed} bytes (notice and receipt)")
    return 0 if code == 250 else 1


if __name__ == "__main__":
    sys.exit(main())
