"""Pli installed from its wheel into a fresh virtual environment outside the project, as a
contractor installs it: pli init, user add, check, run, and a message through it to a
local provider. Nothing of the checkout is importable there."""

from __future__ import annotations

import shutil
import signal
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.deploy.wheels import ROOT, Wheelhouse, fresh_venv
from tests.support import HOST, LoopThread, Provider, free_port, wait_for_port, wait_until

PASSWORD = "un mot de passe assez long"


@pytest.fixture(scope="module")
def installed(wheelhouse: Wheelhouse, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a new venv holding Pli from its wheel."""
    return fresh_venv(tmp_path_factory.mktemp("installed") / "venv", wheelhouse)


def run(bin_dir: Path, *args: str, cwd: Path, stdin: str = "",
        python: bool = False) -> subprocess.CompletedProcess[str]:
    command = [str(bin_dir / "python"), "-m", "gateway.cli"] if python else [str(bin_dir / "pli")]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})


def test_the_wheel_carries_the_default_policy_lists_and_templates(
        wheelhouse: Wheelhouse, installed: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(installed / "python"), "-c",
                            "import gateway; print(gateway.__file__)"],
                           capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(installed.parent) and not package.is_relative_to(ROOT)
    shipped = package / "defaults"
    source = ROOT / "gateway" / "defaults"
    expected = sorted(str(p.relative_to(source)) for p in source.rglob("*")
                      if p.is_file() and p.suffix in (".toml", ".txt", ".html"))
    got = sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*")
                 if p.is_file() and p.suffix in (".toml", ".txt", ".html"))
    assert got == expected and "default.toml" in got


def send(port: int, cert: Path, to: str) -> None:
    message = EmailMessage()
    message["From"] = "dr.martin@cabinet-martin.fr"
    message["To"] = to
    message["Subject"] = "Compte rendu"
    message.set_content("Bonjour,\nvoici le compte rendu.\n")
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=str(cert)))
        client.login("martin", PASSWORD)
        client.send_message(message)


@pytest.fixture
def provider() -> Iterator[Provider]:
    loop = LoopThread()
    p = Provider(loop, None, free_port(), offer_starttls=False).start()
    yield p
    p.stop()
    loop.close()


def test_init_user_check_run_and_a_message_through_the_installed_pli(
        installed: Path, provider: Provider, tmp_path: Path) -> None:
    folder = tmp_path / "etc-pli"
    smtp, smtps, portal, metrics = (free_port() for _ in range(4))
    done = run(installed, "init", str(folder), "--domain", "cabinet-martin.fr",
               "--name", "Cabinet du Dr Martin", "--upstream", f"{HOST}:{provider.port}",
               "--upstream-security", "none", "--listen", HOST, "--submission-port", str(smtp),
               "--submissions-port", str(smtps), "--portal-port", str(portal), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for made in ("policy.toml", "lists/health-secure.txt", "templates/fr/default/notice.html"):
        assert (folder / made).is_file(), made
    config = folder / "pli.toml"
    config.write_text(config.read_text().replace("port = 9925", f"port = {metrics}"))
    added = run(installed, "user", "add", "-c", str(config), "martin", "--address",
                "dr.martin@cabinet-martin.fr", stdin=PASSWORD + "\n", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    checked = run(installed, "check", "-c", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "policy with 3 rule(s)" in checked.stdout
    log = (tmp_path / "pli.log").open("wb")
    proc = subprocess.Popen([str(installed / "pli"), "run", "-c", str(config)], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(smtp, timeout=30)
        send(smtp, folder / "tls" / "ca.pem", "patient@gmail.com")
        got = wait_until(lambda: len(provider.handler.received) == 2
                         and provider.handler.received, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0
    # The patient gets the notice written from the shipped templates; the sender the code.
    by_recipient = {r.rcpt_tos[0]: r.content.decode() for r in got}
    notice = by_recipient["patient@gmail.com"]
    assert "Cabinet du Dr Martin" in notice and "/l/" in notice
    assert "compte rendu" not in notice.lower()
    assert "dr.martin@cabinet-martin.fr" in by_recipient


def test_an_installation_without_its_defaults_says_so_and_writes_nothing(
        installed: Path, tmp_path: Path) -> None:
    """The same package with its data files missing (a broken install, or a wheel built
    without them): pli init refuses in words before writing anything, and pli check on
    a folder without its own lists says what is missing."""
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    broken = tmp_path / "broken"
    shutil.copytree(site / "gateway", broken / "gateway",
                    ignore=shutil.ignore_patterns("*.toml", "*.txt", "*.html"))
    folder = tmp_path / "cabinet"
    done = run(installed, "init", str(folder), "--domain", "cabinet-martin.fr", "--name",
               "Cabinet Martin", cwd=broken, python=True)
    assert done.returncode == 1
    assert "default policy, lists and templates cannot be found" in done.stderr
    assert "Traceback" not in done.stderr and not folder.exists()

    # A folder made by a whole installation, then its lists removed: check names the gap.
    assert run(installed, "init", str(folder), "--domain", "cabinet-martin.fr", "--name",
               "Cabinet Martin", cwd=tmp_path).returncode == 0
    shutil.rmtree(folder / "lists")
    (folder / "policy.toml").write_text('[[rule]]\nname = "all"\ndefault = true\n'
                                        'action = "pass"\n')
    checked = run(installed, "check", "-c", str(folder / "pli.toml"), cwd=broken, python=True)
    assert checked.returncode == 1
    assert "default policy, lists and templates cannot be found" in checked.stderr
    assert "Traceback" not in checked.stderr
