"""The policy on the live path: decided before the 250, reloaded on SIGHUP, and the
contractor's tools (`pli check`, `pli explain`, `pli lists import`) on the same code."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.app import App
from gateway.errors import ConfigError
from gateway.users import User, hash_password, load_users, save_users
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    PliProcess,
    Provider,
    RunningApp,
    make_gateway,
    wait_until,
)


def mail(to: str, sender: str = ADDRESS, subject: str = "Vos résultats") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Bonjour, voici vos résultats.")
    return message


def send(gw: Gateway, message: EmailMessage, user: str = USER,
         password: str = PASSWORD) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        client.starttls(context=gw.client_context())
        client.login(user, password)
        try:
            client.send_message(message)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
        return 250, b""


@pytest.fixture
def default_gw(tmp_path: Path) -> Gateway:
    """A gateway with the very policy `pli init` installs."""
    return make_gateway(tmp_path / "pli", policy=None)


def test_with_the_default_policy_a_colleague_receives_the_message(
        loop: LoopThread, default_gw: Gateway) -> None:
    provider = Provider(loop, None, default_gw.provider_port, offer_starttls=False).start()
    app = RunningApp(loop, default_gw).start()
    try:
        assert send(default_gw, mail("dr.durand@cabinet-martin.fr"))[0] == 250
        assert wait_until(lambda: provider.received)[0].rcpt_tos == ["dr.durand@cabinet-martin.fr"]
    finally:
        app.stop()
        provider.stop()


def test_with_the_default_policy_a_patient_gets_a_notice_and_the_sender_a_code(
        loop: LoopThread, default_gw: Gateway) -> None:
    provider = Provider(loop, None, default_gw.provider_port, offer_starttls=False).start()
    app = RunningApp(loop, default_gw).start()
    try:
        message = mail("patient@gmail.com", subject="Biopsie sentinelsubject")
        message.replace_header("To", "patient@gmail.com, dr.durand@cabinet-martin.fr")
        message.add_attachment(b"%PDF-1.4\nsentinelpdf\n%%EOF\n", maintype="application",
                               subtype="pdf", filename="sentinelname.pdf")
        assert send(default_gw, message)[0] == 250
        got = wait_until(lambda: len(provider.received) == 3 and provider.received)
        by_rcpt = {tuple(r.rcpt_tos): r for r in got}
        colleague = by_rcpt[("dr.durand@cabinet-martin.fr",)].content
        notice = by_rcpt[("patient@gmail.com",)].content
        receipt = by_rcpt[(ADDRESS,)].content
        assert b"sentinelpdf" in colleague or b"c2VudGluZWxwZGY" in colleague  # unchanged copy
        for sentinel in (b"sentinelsubject", b"sentinelname", b"sentinelpdf", b"c2VudGluZWxwZGY"):
            assert sentinel not in notice and sentinel not in receipt
        assert b"/l/" in notice
        links = app.app.vault.links()
        assert len(links) == 1 and links[0].id.encode() in receipt
    finally:
        app.stop()
        provider.stop()


def test_a_message_that_cannot_be_queued_leaves_no_vault_link_behind(
        loop: LoopThread, default_gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    app = RunningApp(loop, default_gw).start()
    try:
        def disk_full(*_args: object) -> None:
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(app.app.spool, "enqueue", disk_full)
        code, text = send(default_gw, mail("patient@gmail.com"))
        assert code == 452 and text.startswith(b"4.3.1")  # the disk is full: said so
        assert app.app.vault.links() == []
    finally:
        app.stop()


def test_a_consumer_webmail_sender_is_refused_with_the_policy_sentence(
        loop: LoopThread, gw: Gateway, provider: Provider) -> None:
    users = load_users(gw.folder / "users.toml")
    users["perso"] = User("perso", hash_password("a long password"), ("cabinet.martin@gmail.com",))
    save_users(gw.folder / "users.toml", users)
    app = RunningApp(loop, gw).start()
    try:
        with capture_logs() as logs:
            code, text = send(gw, mail("patient@example.org", sender="cabinet.martin@gmail.com"),
                              user="perso", password="a long password")
        assert code == 550 and text.startswith(b"5.7.1")
        assert b"adresse grand public" in text and b"consumer address" in text
        decided = [e for e in logs if e["event"] == "policy.decided"]
        assert decided and decided[0]["action"] == "block"
        assert all("Vos r" not in json.dumps(e) for e in logs)  # no subject in the logs
        assert provider.received == []
    finally:
        app.stop()


def test_a_consumer_provider_as_upstream_stops_start_up(loop: LoopThread, tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    gw.config.write_text(gw.config.read_text().replace('host = "127.0.0.1"\nport',
                                                       'host = "smtp.gmail.com"\nport'))
    with pytest.raises(ConfigError, match="smtp.gmail.com.*consumer"):
        loop.run(App(gw.settings()).start())
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check", "-c", str(gw.config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "smtp.gmail.com" in result.stderr


def test_sighup_reloads_the_policy_and_keeps_the_old_one_when_the_new_is_broken(
        tmp_path: Path, loop: LoopThread) -> None:
    gw = make_gateway(tmp_path / "pli")
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    pli = PliProcess(gw, tmp_path / "pli.log").start()
    policy = gw.folder / "policy.toml"
    try:
        assert send(gw, mail("patient@example.org"))[0] == 250
        good = policy.read_text()
        # A typo: the reload fails, the previous policy (pass) stays in force.
        policy.write_text(good.replace('action = "pass"', 'acton = "pass"'))
        assert pli.proc is not None
        pli.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "policy.reload_failed" in pli.log())
        assert send(gw, mail("patient@example.org"))[0] == 250
        # A valid change takes effect without dropping an open session.
        with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
            client.starttls(context=gw.client_context())
            client.login(USER, PASSWORD)
            policy.write_text(good.replace('name = "relay-everything"\ndefault = true\n'
                                           'action = "pass"',
                                           'name = "nothing-out"\ndefault = true\n'
                                           'action = "block"\n[rule.block]\n'
                                           'message_fr = "Bloqué."\nmessage_en = "Blocked."'))
            pli.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "policy.reloaded" in pli.log())
            with pytest.raises(smtplib.SMTPDataError) as err:
                client.send_message(mail("patient@example.org"))
            assert err.value.smtp_code == 550 and b"Blocked." in err.value.smtp_error
        wait_until(lambda: len(provider.received) == 2)
    finally:
        pli.kill(signal.SIGTERM)
        provider.stop()


def run_pli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_check_names_the_policy_rule_and_field_of_each_error(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    policy = gw.folder / "policy.toml"
    policy.write_text(policy.read_text().replace("download_limit = 5", "download_limt = 5"))
    result = run_pli("check", "-c", str(gw.config))
    assert result.returncode == 1
    assert "policy.toml" in result.stderr and "everyone-else" in result.stderr
    assert "download_limt" in result.stderr


def test_check_summarises_a_good_configuration(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    result = run_pli("check", "-c", str(gw.config))
    assert result.returncode == 0, result.stderr
    assert "policy with 3 rule(s)" in result.stdout and "2 user(s)" in result.stdout


def test_explain_gives_each_recipient_its_rule_as_text_and_json(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    eml = tmp_path / "message.eml"
    eml.write_bytes(bytes(mail("patient@gmail.com")))
    args = ["explain", "-c", str(gw.config), str(eml), "--from", ADDRESS,
            "--to", "patient@gmail.com", "--to", "dr.durand@cabinet-martin.fr"]
    text = run_pli(*args)
    assert text.returncode == 0, text.stderr
    assert "everyone-else" in text.stdout and "colleagues-and-secure-health" in text.stdout
    as_json = json.loads(run_pli(*args, "--json").stdout)
    assert json.dumps(as_json).count("protect") >= 1
    # Nothing was queued or sent by explaining.
    assert not (gw.folder / "data" / "spool" / "queue").exists() or \
        not list((gw.folder / "data" / "spool" / "queue").iterdir())


def test_lists_import_loads_a_whitelist_into_the_named_list(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    download = tmp_path / "whitelist.csv"
    download.write_text("domaine;operateur\nch-exemple.mssante.fr;CH Exemple\n"
                        "clinique-test.mssante.fr;Clinique\n")
    result = run_pli("lists", "import", str(download), "--into", "health-secure",
                     "-c", str(gw.config))
    assert result.returncode == 0, result.stderr
    assert "ch-exemple.mssante.fr" in (gw.folder / "lists" / "health-secure.txt").read_text()
    unknown = run_pli("lists", "import", str(download), "--into", "nope", "-c", str(gw.config))
    assert unknown.returncode == 1 and "health-secure" in unknown.stderr


def test_check_reports_a_protect_rule_whose_templates_are_missing(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    policy = gw.folder / "policy.toml"
    policy.write_text(policy.read_text().replace('template = "default"', 'template = "cabinet"'))
    result = run_pli("check", "-c", str(gw.config))
    assert result.returncode == 1
    assert "everyone-else" in result.stderr and "fr/cabinet" in result.stderr


def test_explain_json_gives_per_recipient_the_rule_what_held_and_why_earlier_rules_did_not(
        tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    eml = tmp_path / "message.eml"
    eml.write_bytes(bytes(mail("patient@gmail.com")))
    result = run_pli("explain", "-c", str(gw.config), str(eml), "--from", ADDRESS,
                     "--to", "patient@gmail.com", "--to", "dr.durand@cabinet-martin.fr",
                     "--json")
    assert result.returncode == 0, result.stderr
    patient, colleague = json.loads(result.stdout)["recipients"]  # in envelope order
    assert set(patient) == {"recipient", "rule", "action", "settings", "conditions_held",
                            "rules_not_matching"}
    assert (patient["recipient"], patient["rule"], patient["action"]) == \
        ("patient@gmail.com", "everyone-else", "protect")
    assert patient["settings"]["download_limit"] == 5
    assert patient["settings"]["access_code"] == "generated"  # no [code:] tag in the subject
    assert patient["conditions_held"]
    assert [r["rule"] for r in patient["rules_not_matching"]] == [
        "consumer-webmail-sender", "colleagues-and-secure-health"]
    assert all(r["failed"] for r in patient["rules_not_matching"])
    assert (colleague["recipient"], colleague["rule"], colleague["action"]) == \
        ("dr.durand@cabinet-martin.fr", "colleagues-and-secure-health", "pass")
    assert [r["rule"] for r in colleague["rules_not_matching"]] == ["consumer-webmail-sender"]
    assert any("internal" in held for held in colleague["conditions_held"])
