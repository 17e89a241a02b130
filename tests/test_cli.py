"""The `pli` command as a person runs it: init, user, check, demo."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port, wait_for_port, wait_until


def pli(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def test_init_user_check_and_list_work_together(tmp_path: Path) -> None:
    folder = tmp_path / "cabinet"
    result = pli("init", str(folder), "--domain", "cabinet-martin.fr", "--name", "Cabinet Martin",
                 "--upstream", "smtp.provider.example:465")
    assert result.returncode == 0, result.stderr
    assert "pli user add" in result.stdout  # the next steps are printed
    assert 'security = "tls"' in (folder / "pli.toml").read_text()  # port 465 means TLS
    config = str(folder / "pli.toml")
    added = pli("user", "add", "-c", config, "martin", "--address", "Dr.Martin@cabinet-martin.fr",
                stdin="a long enough password\n")
    assert added.returncode == 0, added.stderr
    listed = pli("user", "list", "-c", config)
    assert listed.stdout.strip() == "martin\tdr.martin@cabinet-martin.fr"
    checked = pli("check", "-c", config)
    assert checked.returncode == 0, checked.stderr
    assert "1 user(s)" in checked.stdout
    assert "1 upstream account(s) with 3 connection(s) each (at most 20 in all)" in checked.stdout
    assert "a long enough password" not in (folder / "users.toml").read_text()
    deleted = pli("user", "del", "-c", config, "martin")
    assert deleted.returncode == 0
    assert pli("user", "del", "-c", config, "martin").returncode == 1


def test_an_accented_domain_gives_a_server_name_in_its_xn_form(tmp_path: Path) -> None:
    folder = tmp_path / "cabinet"
    result = pli("init", str(folder), "--domain", "cabinet-santé.fr", "--name", "Cabinet Martin")
    assert result.returncode == 0, result.stderr
    text = (folder / "pli.toml").read_text()
    assert 'hostname = "pli.xn--cabinet-sant-meb.fr"' in text
    assert pli("check", "-c", str(folder / "pli.toml")).returncode == 0
    # A name that cannot be a host name is refused in words, before anything is written.
    (folder / "pli.toml").write_text(text.replace('"pli.xn--cabinet-sant-meb.fr"',
                                                  '"pli cabinet"', 1))
    checked = pli("check", "-c", str(folder / "pli.toml"))
    assert checked.returncode == 1 and "hostname" in checked.stderr
    assert "xn--" in checked.stderr and "Traceback" not in checked.stderr
    bad = pli("init", str(tmp_path / "other"), "--domain", "cabinet martin.fr", "--name", "Cabinet Martin")
    assert bad.returncode == 1 and "--domain" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "other").exists()


def test_init_refuses_a_port_that_cannot_be_one_before_writing_anything(tmp_path: Path) -> None:
    for args in (["--upstream", "smtp.ovh.net:99999"], ["--submission-port", "70000"],
                 ["--portal-port", "0"]):
        result = pli("init", str(tmp_path / "cabinet"), "--name", "Cabinet Martin", *args)
        assert result.returncode != 0 and "port" in result.stderr.lower(), (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "cabinet").exists()


def test_init_without_a_name_and_no_terminal_refuses_before_writing_anything(
        tmp_path: Path) -> None:
    """A notice from "Votre cabinet" reads as phishing: the name is not optional."""
    for args in ([], ["--name", ""], ["--name", "Votre cabinet"]):
        result = pli("init", str(tmp_path / "cabinet"), "--domain", "cabinet-martin.fr", *args)
        assert result.returncode == 1, args
        assert '--name "Cabinet du Dr Martin"' in result.stderr and "phishing" in result.stderr
        assert not (tmp_path / "cabinet").exists()


def test_init_asks_for_the_name_at_a_terminal(tmp_path: Path) -> None:
    main, child = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "init",
                                 str(tmp_path / "cabinet"), "--domain", "cabinet-martin.fr"],
                                stdin=child, stdout=child, stderr=child)
        os.close(child)
        seen = b""
        while b"practice's name" not in seen:
            ready, _, _ = select.select([main], [], [], 30)
            assert ready, seen
            seen += os.read(main, 1024)
        os.write(main, b"Cabinet du Dr Martin\n")
        assert proc.wait(60) == 0
    finally:
        os.close(main)
    assert 'name = "Cabinet du Dr Martin"' in (tmp_path / "cabinet" / "pli.toml").read_text()


def test_check_warns_while_the_name_is_the_placeholder(tmp_path: Path) -> None:
    assert pli("init", str(tmp_path), "--name", "Cabinet Martin").returncode == 0
    config = tmp_path / "pli.toml"
    assert pli("check", "-c", str(config)).stderr == ""
    config.write_text(config.read_text().replace('name = "Cabinet Martin"',
                                                 'name = "Votre cabinet"'))
    checked = pli("check", "-c", str(config))
    assert checked.returncode == 0 and checked.stdout.startswith("OK:")
    assert "warning:" in checked.stderr and "[practice] name is still 'Votre cabinet'" in (
        checked.stderr)


def test_init_says_in_words_when_the_data_folder_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = pli("init", str(tmp_path / "cabinet"), "--name", "Cabinet Martin",
                 "--data-dir", str(tmp_path / "a-file" / "data"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'a-file' / 'data'}: Not a directory" in result.stderr
    # Nothing that would stop a second try: no pli.toml was written.
    assert not (tmp_path / "cabinet" / "pli.toml").exists()


def test_config_comes_from_the_environment_then_the_current_folder(tmp_path: Path) -> None:
    assert pli("init", str(tmp_path / "a"), "--name", "Cabinet Martin").returncode == 0
    assert pli("check", cwd=tmp_path / "a").returncode == 0
    result = pli("check", cwd=tmp_path)
    assert result.returncode == 1 and "pli init" in result.stderr


def test_a_short_password_or_missing_address_is_refused(tmp_path: Path) -> None:
    pli("init", str(tmp_path), "--name", "Cabinet Martin")
    config = str(tmp_path / "pli.toml")
    short = pli("user", "add", "-c", config, "x", "--address", "x@y.fr", stdin="short\n")
    assert short.returncode == 1 and "10 characters" in short.stderr
    no_address = pli("user", "add", "-c", config, "x", stdin="long enough password\n")
    assert no_address.returncode == 1 and "--address" in no_address.stderr


def test_check_reports_a_broken_configuration_with_exit_status_1(tmp_path: Path) -> None:
    pli("init", str(tmp_path), "--name", "Cabinet Martin")
    config = tmp_path / "pli.toml"
    config.write_text(config.read_text().replace("[tls]", "[tls]\ncertificate = 1"))
    result = pli("check", "-c", str(config))
    assert result.returncode == 1
    assert "tls.certificate: unknown setting" in result.stderr


def test_check_warns_when_the_data_disk_cannot_take_a_largest_message(tmp_path: Path) -> None:
    pli("init", str(tmp_path), "--name", "Cabinet Martin")
    config = tmp_path / "pli.toml"
    text = config.read_text()
    assert "max_message_size = 157286400" in text
    config.write_text(text.replace("max_message_size = 157286400",
                                   f"max_message_size = {2**60}"))  # no disk has 1.5 EiB
    result = pli("check", "-c", str(config))
    assert result.returncode == 1
    assert "MiB free, but Pli refuses mail (452)" in result.stderr
    assert "lower max_message_size" in result.stderr


def test_check_gives_the_certificate_date_and_refuses_an_expired_one(tmp_path: Path) -> None:
    from gateway.tls import certificate_expiry, utc_day, write_self_signed

    pli("init", str(tmp_path), "--name", "Cabinet Martin")
    config = str(tmp_path / "pli.toml")
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    checked = pli("check", "-c", config)
    assert checked.returncode == 0, checked.stderr
    assert f"TLS certificate valid until {utc_day(certificate_expiry(cert))}" in checked.stdout
    write_self_signed(cert, key, "pli.example.fr", days=0)  # valid until the moment it is made
    expired = pli("check", "-c", config)
    assert expired.returncode == 1
    assert f"expired on {utc_day(certificate_expiry(cert))}" in expired.stderr
    assert "run `pli tls renew` and reload Pli" in expired.stderr  # Pli made it: renewable


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks comes with `make test`")
def test_demo_prints_a_swaks_command_that_relays_into_its_outbox(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    ports = [free_port() for _ in range(4)]
    out = tmp_path / "demo.out"
    with out.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "demo", "--dir", str(folder),
             "--submission-port", str(ports[0]), "--submissions-port", str(ports[1]),
             "--provider-port", str(ports[2]), "--portal-port", str(ports[3])],
            stdout=handle, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(ports[0], timeout=20)
        printed = wait_until(lambda: "Stop with Ctrl-C" in out.read_text() and out.read_text())
        command = printed.split("Send a test message with swaks:", 1)[1].split("\n\n", 1)[0]
        sent = subprocess.run(["bash", "-c", command.strip()], capture_output=True, text=True,
                              timeout=30)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        delivered = wait_until(lambda: list((folder / "outbox").glob("*.eml")))
        assert b"This is a test mailing" in delivered[0].read_bytes()
        # To a patient: a notice whose link the demo's own portal serves.
        patient = command.strip().replace("dr.martin@cabinet-demo.fr", "patient@gmail.com")
        sent = subprocess.run(["bash", "-c", patient], capture_output=True, text=True,
                              timeout=30)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        outbox = wait_until(lambda: len(list((folder / "outbox").glob("*.eml"))) == 3 and
                            sorted((folder / "outbox").glob("*.eml")))
        notices = [p.read_bytes().replace(b"=\r\n", b"") for p in outbox]
        link = next(re.search(rb"(http://127\.0\.0\.1:\d+/l/[\w-]+)#", n) for n in notices
                    if b"/l/" in n)
        assert link is not None
        with urllib.request.urlopen(link.group(1).decode(), timeout=10) as page:
            assert page.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert proc.returncode == 0
    output = out.read_text()
    password = (folder / "demo-password.txt").read_text().strip()
    assert f"Port:                  {ports[0]}" in output and password in output


def test_links_list_revoke_and_purge(tmp_path: Path) -> None:
    from gateway.vault import Manifest, SealFile, Vault
    from tests.support import make_gateway

    gw = make_gateway(tmp_path / "pli", policy=None)
    vault = Vault(gw.settings().vault_dir)
    link = vault.seal(Manifest(sender="x", subject="s", date=""),
                      [SealFile("a.pdf", "application/pdf", "application/pdf", b"%PDF")],
                      sender="dr@cabinet-martin.fr", recipient="p@gmail.com",
                      expires_at=time.time() + 3600, download_limit=5, access_code="1234")
    listed = pli("links", "list", "-c", str(gw.config))
    assert link.id in listed.stdout and "ok" in listed.stdout and "p@gmail.com" in listed.stdout
    assert "a.pdf" not in listed.stdout  # file names are health data
    assert "0/5 downloads (most downloaded file, 0 used up)" in listed.stdout
    assert "not opened  no notices" in listed.stdout
    many = vault.seal(Manifest(sender="x", subject="s", date=""),
                      [SealFile(f"{n}.pdf", "application/pdf", "application/pdf", b"%PDF")
                       for n in range(3)],
                      sender="dr@cabinet-martin.fr", recipient="p@gmail.com",
                      expires_at=time.time() + 3600, download_limit=2, access_code=None)
    info = vault.get(many.id)
    assert info is not None
    for document in (info.files[0], info.files[0], info.files[1]):
        assert vault.grant_download(many.id, document.id) is not None
    vault.mark_opened(many.id, time.mktime((2026, 12, 1, 10, 15, 0, 0, 0, -1)))
    [row] = [line for line in pli("links", "list", "-c", str(gw.config)).stdout.splitlines()
             if line.startswith(many.id)]
    assert "2/2 downloads (most downloaded file, 1 used up)" in row and " ok " in row
    assert "3 file(s)" in row and "opened 2026-12-01 10:15" in row
    from gateway.vault.index import StoredObject
    assert vault.index.create_reply(many.id, "RRRRRRRRRRRRRRRRRRRRRQ", created=time.time(),
                                    objects=[StoredObject("manifest", 1)], max_replies=1) \
        is False  # this link's rule took no reply
    with vault.index._write() as db:
        db.execute("UPDATE links SET reply_max_bytes = 1 WHERE id = ?", (many.id,))
    assert vault.index.create_reply(many.id, "RRRRRRRRRRRRRRRRRRRRRQ", created=time.time(),
                                    objects=[StoredObject("manifest", 1)], max_replies=1)
    rows = pli("links", "list", "-c", str(gw.config)).stdout.splitlines()
    assert "1 reply" in next(r for r in rows if r.startswith(many.id))
    assert f"reply from the patient to {many.id}" in next(
        r for r in rows if r.startswith("RRRRRRRRRRRRRRRRRRRRRQ"))
    assert pli("links", "revoke", many.id, "-c", str(gw.config)).returncode == 0
    assert pli("links", "revoke", link.id, "-c", str(gw.config)).returncode == 0
    assert "revoked" in pli("links", "list", "-c", str(gw.config)).stdout
    assert pli("links", "revoke", "nope", "-c", str(gw.config)).returncode == 1
    purged = pli("links", "purge", "-c", str(gw.config))
    assert "purged 2 link(s)" in purged.stdout
    # The patient's reply is a link of its own, to the sender: it expires in its time.
    assert "\n1 link(s)" in pli("links", "list", "-c", str(gw.config)).stdout


def test_links_extend_gives_more_days_and_downloads_and_is_audited(tmp_path: Path) -> None:
    import json

    from gateway.vault import Manifest, SealFile, Vault
    from tests.support import make_gateway

    gw = make_gateway(tmp_path / "pli", policy=None)
    vault = Vault(gw.settings().vault_dir)
    link = vault.seal(Manifest(sender="x", subject="s", date=""),
                      [SealFile("a.pdf", "application/pdf", "application/pdf", b"%PDF")],
                      sender="dr@cabinet-martin.fr", recipient="p@gmail.com",
                      expires_at=time.time() - 60, download_limit=5, access_code=None)
    assert vault.status(link.id) == "expired"
    done = pli("links", "extend", link.id, "--days", "3", "--downloads", "2",
               "-c", str(gw.config))
    assert done.returncode == 0, done.stderr
    assert "7 downloads per document" in done.stdout
    info = vault.get(link.id)
    assert info is not None and info.download_limit == 7 and vault.status(link.id) == "ok"
    assert abs(info.expires - (time.time() + 3 * 86400)) < 60  # from now: it had expired
    assert pli("links", "extend", link.id, "-c", str(gw.config)).returncode == 1
    assert pli("links", "revoke", link.id, "-c", str(gw.config)).returncode == 0
    refused = pli("links", "extend", link.id, "--days", "1", "-c", str(gw.config))
    assert refused.returncode == 1 and "revoked" in refused.stderr
    shown = pli("audit", "show", "--link", link.id, "-c", str(gw.config)).stdout
    assert "admin.link_extended" in shown and json.dumps({"days": 3}).strip("{}") in shown
