"""From an empty folder to a stopped server with the commands a contractor types:
init → user add → check → run → send → SIGHUP → SIGTERM, and no message lost."""

from __future__ import annotations

import signal
import smtplib
import ssl
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from tests.support import HOST, LoopThread, Provider, free_port, wait_for_port, wait_until


def pli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def send(port: int, cert: Path, to: str) -> None:
    message = EmailMessage()
    message["From"] = "dr.martin@cabinet-martin.fr"
    message["To"] = to
    message["Subject"] = "Compte rendu"
    message.set_content("Bonjour,\nvoici le compte rendu.\n")
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=str(cert)))
        client.login("martin", "un mot de passe assez long")
        client.send_message(message)


def test_a_practice_set_up_from_nothing_loses_no_message(tmp_path: Path) -> None:
    folder = tmp_path / "pli"
    smtp, smtps, portal, provider_port = (free_port() for _ in range(4))
    done = pli("init", str(folder), "--domain", "cabinet-martin.fr", "--name", "Cabinet Martin",
               "--upstream", f"{HOST}:{provider_port}", "--upstream-security", "none",
               "--submission-port", str(smtp), "--submissions-port", str(smtps),
               "--portal-port", str(portal), "--listen", HOST)
    assert done.returncode == 0, done.stderr
    config = folder / "pli.toml"
    config.write_text(config.read_text().replace("port = 9925", f"port = {free_port()}"))
    assert pli("user", "add", "-c", str(config), "martin", "--address",
               "dr.martin@cabinet-martin.fr", stdin="un mot de passe assez long\n"
               ).returncode == 0
    checked = pli("check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    cert = folder / "tls" / "cert.pem"
    log = tmp_path / "pli.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c",
                                     str(config)], stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(smtp)
        return proc

    loop = LoopThread()
    provider = Provider(loop, None, provider_port, offer_starttls=False)
    proc = start()
    try:
        # The provider is not up yet: both messages wait in the queue.
        send(smtp, cert, "dr.durand@cabinet-martin.fr")   # a colleague: passed as it is
        send(smtp, cert, "patient@gmail.com")             # a patient: notice + receipt
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "policy.reloaded" in log.read_text())
        send(smtp, cert, "dr.durand@cabinet-martin.fr")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        provider.start()
        proc = start()
        wait_until(lambda: log.read_text().count("pli.ready") == 2)
        # Deferred mail waits for its next retry (5 minutes); the admin need not wait.
        assert pli("queue", "flush", "-c", str(config)).returncode == 0
        got = wait_until(lambda: len(provider.received) == 4 and provider.received, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        provider.stop()
        loop.close()
    recipients = sorted(r.rcpt_tos[0] for r in got)
    assert recipients == ["dr.durand@cabinet-martin.fr", "dr.durand@cabinet-martin.fr",
                          "dr.martin@cabinet-martin.fr", "patient@gmail.com"]
    assert pli("queue", "list", "-c", str(config)).stdout.strip() == "0 message(s) queued"
    assert pli("audit", "verify", "-c", str(config)).returncode == 0
