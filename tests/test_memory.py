"""The README's "Memory does not grow with the size of a message": a real `pli run` takes
a message of 4 KB and one of 86 MB, protected for a patient and passed to a colleague by
the default policy, and its resident memory's peak (the kernel's VmHWM, reset between the
two) grows by far less than the large message's size."""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path

from tests.spool.helpers import submit, wait_queue_empty
from tests.support import ADDRESS, LoopThread, PliProcess, Provider, make_gateway, wait_until

PATIENT, COLLEAGUE = "patient@gmail.com", "dr.durand@cabinet-martin.fr"
LARGE = 60 * 1024 * 1024  # the attachment: 86 MB of message once base64-encoded


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def message(attachment: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"] = ADDRESS, f"{PATIENT}, {COLLEAGUE}"
    msg["Subject"] = "Imagerie"
    msg.set_content("Bonjour, voici les images.")
    msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                       filename="scan.bin")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def test_memory_does_not_grow_with_the_size_of_a_message(
        tmp_path: Path, loop: LoopThread) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False,
                        smtp_options={"data_size_limit": 0}).start()  # no SIZE limit
    pli = PliProcess(gw, tmp_path / "pli.log").start()
    try:
        assert pli.proc is not None
        pid = pli.proc.pid
        # A notice and a receipt for the patient, the message itself for the colleague.
        submit(gw, (PATIENT, COLLEAGUE), message(os.urandom(3000)))
        wait_until(lambda: len(provider.received) == 3, timeout=15)
        wait_queue_empty(gw)
        at_rest = status_mb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
        large = message(os.urandom(LARGE))
        assert len(large) > 82e6
        submit(gw, (PATIENT, COLLEAGUE), large)
        wait_until(lambda: len(provider.received) == 6, timeout=60)
        wait_queue_empty(gw, timeout=30)
        grew = status_mb(pid, "VmHWM") - at_rest
    finally:
        pli.kill()
        provider.stop()
    passed = max(provider.received, key=lambda r: len(r.content))
    assert passed.rcpt_tos == [COLLEAGUE]
    assert len(passed.content) > len(large) - 4096  # the colleague got the whole of it
    assert grew < 50, f"pli run's peak grew by {grew:.0f} MB for a {len(large) / 1e6:.0f} MB message"
