"""A real `pli run` whose data folder sits on a small filesystem that fills up: the client
gets 452 4.3.1 with a sentence, keeps its message, nothing half-written stays behind, and
mail flows again once there is room.

The small filesystem is a tmpfs mounted over the data folder in a mount namespace of the
`pli run` process alone (``unshare``); the test reaches it through ``/proc/PID/root``."""

from __future__ import annotations

import errno
import os
import re
import shutil
import smtplib
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.spool.helpers import PATIENT, message, stays, submit
from tests.support import (
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

MAX_SIZE = 256 * 1024  # so the room Pli wants at MAIL FROM is 384 KiB
MOUNT = 'mount -t tmpfs -o size=4m,mode=0700 tmpfs "$0" && exec "$@"'


def _namespace_command() -> list[str] | None:
    """``unshare`` options that give a process its own mounts here, if any do."""
    if shutil.which("unshare") is None:
        return None
    for options in (["-rm"], ["-m"]):  # as any user (user namespace), or as root
        probe = subprocess.run(["unshare", *options, "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                               capture_output=True, timeout=10)
        if probe.returncode == 0:
            return ["unshare", *options]
    return None


NAMESPACE = _namespace_command()
pytestmark = pytest.mark.skipif(
    NAMESPACE is None, reason="no mount namespace can be made here (unshare -m refused)")


def on_small_disk(tmp_path: Path, *, protect: bool) -> tuple[Gateway, PliProcess]:
    """Pli on a small disk; with the policy ``pli init`` installs, the message to the
    patient is protected (so the vault fills), with the test policy it passes."""
    gw = make_gateway(tmp_path / "pli", **({"policy": None} if protect else {}))
    config = gw.config.read_text()
    assert "max_message_size = 157286400" in config
    gw.config.write_text(config.replace("max_message_size = 157286400",
                                        f"max_message_size = {MAX_SIZE}"))
    data = gw.settings().data_dir
    assert NAMESPACE is not None
    pli = PliProcess(gw, tmp_path / "pli.log", wrap=[*NAMESPACE, "sh", "-c", MOUNT, str(data)])
    return gw, pli.start()


@pytest.fixture(params=["pass", "protect"])
def small_disk(request: pytest.FixtureRequest,
               tmp_path: Path) -> Iterator[tuple[Gateway, PliProcess, str]]:
    gw, pli = on_small_disk(tmp_path, protect=request.param == "protect")
    try:
        yield gw, pli, request.param
    finally:
        if pli.proc is not None:
            pli.kill()


def inside(pli: PliProcess, path: Path) -> Path:
    """``path`` as the `pli run` process sees it (its data folder is its own tmpfs)."""
    assert pli.proc is not None
    return Path(f"/proc/{pli.proc.pid}/root") / path.relative_to("/")


def leave_free(pli: PliProcess, data: Path, free: int) -> None:
    """Grow or shrink a filler file until about ``free`` bytes are left on the tmpfs."""
    folder = inside(pli, data)
    filler = folder / "filler"
    filler.touch()
    st = os.statvfs(folder)
    target = max(0, filler.stat().st_size + st.f_bavail * st.f_frsize - free)
    with filler.open("r+b", buffering=0) as f:  # unbuffered: a full disk is said by
        # the write itself, never later by the close that would flush what was left
        f.truncate(min(target, filler.stat().st_size))
        f.seek(0, os.SEEK_END)
        try:
            f.write(b"\0" * (target - f.tell()))  # written, not sparse: tmpfs counts pages
            f.flush()
        except OSError as exc:  # Pli wrote a little meanwhile: full is full
            if exc.errno != errno.ENOSPC or free > 64 * 1024:
                raise
    st = os.statvfs(folder)
    assert abs(st.f_bavail * st.f_frsize - free) <= 64 * 1024


def get(gw: Gateway, path: str) -> tuple[int, str]:
    url = f"http://{HOST}:{gw.settings().metrics.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_a_full_disk_gets_452_and_loses_nothing_then_mail_flows_again(
        small_disk: tuple[Gateway, PliProcess, str], loop: LoopThread) -> None:
    gw, pli, action = small_disk
    data = gw.settings().data_dir
    assert os.statvfs(inside(pli, data)).f_blocks * os.statvfs(inside(pli, data)).f_frsize \
        <= 4 * 1024 * 1024  # it is the small filesystem, not the test's disk

    # Less room than 1.5 times the largest message: refused at MAIL FROM, before upload.
    leave_free(pli, data, 300 * 1024)
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        code, text = client.mail(ADDRESS)
    assert code == 452 and text.startswith(b"4.3.1 "), (code, text)
    assert b"disque du serveur Pli est plein" in text and b"disk is full" in text
    status, health = get(gw, "/healthz")  # monitoring sees it before the users call
    assert status == 503 and health.startswith("disk almost full: 0.3 MiB free"), health
    assert "refused (452) below 0.4 MiB" in health  # 1.5 times the 256 KiB largest message

    # Room at MAIL FROM, none left when the message comes: 452 at the end of DATA.
    leave_free(pli, data, 600 * 1024)
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        assert client.mail(ADDRESS)[0] == 250
        assert client.rcpt(PATIENT)[0] == 250
        leave_free(pli, data, 64 * 1024)
        big = message(body="Résultats\n" + "x" * 200_000)
        code, text = client.data(big)
    assert code == 452 and text.startswith(b"4.3.1 "), (code, text)
    spool = inside(pli, gw.settings().spool_dir)
    assert not any((spool / "tmp").iterdir()), "a half-written file stayed in the spool"
    assert not any((spool / "incoming").iterdir()) and not any((spool / "queue").iterdir())
    vault = inside(pli, gw.settings().vault_dir)
    assert not list(vault.glob("tmp/*")) and not list(vault.glob("objects/*")), \
        "a half-sealed link stayed in the vault"
    log = pli.log()  # said at MAIL FROM, then while the message was being written
    refusals = log.count('"event": "session.disk_full"') + log.count('"event": "pipeline.disk_full"')
    assert refusals == 2, log

    _, exposition = get(gw, "/metrics")
    assert re.search(r'(?m)^pli_disk_full_refusals_total\{instance="[^"]+"\} 2$', exposition)
    free = next(line for line in exposition.splitlines() if line.startswith("pli_data_free_"))
    assert 0 < float(free.split()[1]) < 200 * 1024

    # Room again: the next message is taken and delivered, once; the refused ones never.
    (inside(pli, data) / "filler").unlink()
    assert get(gw, "/healthz") == (200, "ok\n")
    queue_id = submit(gw)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    try:
        wait_until(lambda: provider.received, timeout=15)
        wait_until(lambda: not any((spool / "queue").iterdir()), timeout=10)
        stays(lambda: len(provider.received) == (1 if action == "pass" else 2), 0.5)
    finally:
        provider.stop()
    # Protected: the notice, and the receipt that gives the sender the generated code.
    assert [PATIENT] in [m.rcpt_tos for m in provider.received]
    assert f'"queue_id": "{queue_id}"' in pli.log()


def test_an_outcome_the_full_disk_would_not_take_still_sends_no_one_twice(
        tmp_path: Path, loop: LoopThread) -> None:
    gw, pli = on_small_disk(tmp_path, protect=False)
    other = "other.patient@example.org"
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False)
    provider.handler.rcpt_replies[other] = "451 4.3.0 Mailbox busy, try later"
    try:
        submit(gw, recipients=(PATIENT, other))  # the provider is not up yet: it waits
        data = gw.settings().data_dir
        leave_free(pli, data, 0)  # now no outcome can be written down
        provider.start()
        wait_until(lambda: provider.received, timeout=15)
        wait_until(lambda: '"event": "spool.state_unsaved"' in pli.log(), timeout=10)
        # Retries come every 0.3 to 1 s here: the patient already served is not sent again.
        stays(lambda: len(provider.received) == 1, 3.0)
        assert provider.received[0].rcpt_tos == [PATIENT]
        (inside(pli, data) / "filler").unlink()
        del provider.handler.rcpt_replies[other]
        wait_until(lambda: len(provider.received) == 2, timeout=15)
        spool = inside(pli, gw.settings().spool_dir)
        wait_until(lambda: not any((spool / "queue").iterdir()), timeout=10)
        stays(lambda: len(provider.received) == 2, 0.5)
        assert provider.received[1].rcpt_tos == [other]
    finally:
        provider.stop()
        pli.kill()
