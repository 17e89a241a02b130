"""`pli init --provider NAME` writes the account of a provider practices use: its server,
how to log in, its published sending limits and what to create there. Configuration
only: no test here, and no code, talks to a real provider."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_settings

NAME = ("--name", "Cabinet du Dr Martin")


def pli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], check=False,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("provider, host, port, security, auth, limits", [
    ("microsoft365", "smtp.office365.com", 587, "starttls", "xoauth2",
     {"max_messages_per_minute": 30, "max_recipients_per_day": 10000}),
    ("google", "smtp.gmail.com", 587, "starttls", "xoauth2",
     {"max_messages_per_day": 2000, "max_recipients_per_day": 10000,
      "max_recipients_per_message": 100}),
    ("ovh", "ssl0.ovh.net", 465, "tls", "password", {}),
    ("gandi", "mail.gandi.net", 465, "tls", "password", {"max_recipients_per_message": 40}),
    ("ionos", "smtp.ionos.fr", 587, "starttls", "password",
     {"max_recipients_per_message": 200}),
])
def test_init_writes_the_providers_server_login_and_limits(
        tmp_path: Path, provider: str, host: str, port: int, security: str, auth: str,
        limits: dict[str, int]) -> None:
    done = pli("init", str(tmp_path / "cab"), *NAME, "--domain", "cabinet-martin.fr",
               "--provider", provider)
    assert done.returncode == 0, done.stderr
    account = load_settings(tmp_path / "cab" / "pli.toml").upstream[0]
    assert (account.host, account.port, account.security, account.auth) == (
        host, port, security, auth)
    assert account.username == "cabinet@cabinet-martin.fr"
    names = ("max_messages_per_minute", "max_recipients_per_message",
             "max_recipients_per_day", "max_messages_per_day")
    assert {n: getattr(account, n) for n in names if getattr(account, n)} == limits
    assert "pli check --upstream" in done.stdout


def test_the_microsoft365_account_says_what_to_create_in_entra_id(tmp_path: Path) -> None:
    assert pli("init", str(tmp_path / "cab"), *NAME, "--domain", "cabinet-martin.fr",
               "--provider", "microsoft365").returncode == 0
    text = (tmp_path / "cab" / "pli.toml").read_text()
    for words in ("App registrations", "SMTP.SendAsApp", "Grant admin",
                  "New-ServicePrincipal", "Add-MailboxPermission",
                  "SmtpClientAuthenticationDisabled $false"):
        assert words in text, words
    account = load_settings(tmp_path / "cab" / "pli.toml").upstream[0]
    assert account.oauth is not None and account.oauth.provider == "microsoft365"
    assert account.oauth.default_token_url() == (
        "https://login.microsoftonline.com/cabinet-martin.fr/oauth2/v2.0/token")
    # Until the secret is in its file, pli check says so (and the start-up would too).
    checked = pli("check", "-c", str(tmp_path / "cab" / "pli.toml"))
    assert checked.returncode == 1
    assert "cannot read the client secret from" in checked.stderr
    assert "entra-client-secret" in checked.stderr


def test_the_google_account_says_how_to_delegate_to_the_service_account(
        tmp_path: Path) -> None:
    assert pli("init", str(tmp_path / "cab"), *NAME, "--provider", "google").returncode == 0
    text = (tmp_path / "cab" / "pli.toml").read_text()
    assert "Domain-wide delegation" in text and "https://mail.google.com/" in text
    checked = pli("check", "-c", str(tmp_path / "cab" / "pli.toml"))
    assert "consumer mail provider" not in checked.stderr  # a Workspace service account
    assert "google-service-account.json" in checked.stderr  # its key is still to come


def test_orange_pro_needs_the_server_from_the_customer_area(tmp_path: Path) -> None:
    refused = pli("init", str(tmp_path / "cab"), *NAME, "--provider", "orange-pro")
    assert refused.returncode == 1 and "--upstream HOST:PORT" in refused.stderr
    assert not (tmp_path / "cab").exists()
    done = pli("init", str(tmp_path / "cab"), *NAME, "--provider", "orange-pro",
               "--upstream", "smtp.pro.example.fr:465")
    assert done.returncode == 0, done.stderr
    account = load_settings(tmp_path / "cab" / "pli.toml").upstream[0]
    assert (account.host, account.port, account.security) == ("smtp.pro.example.fr", 465, "tls")
    assert "No sending limits set" in (tmp_path / "cab" / "pli.toml").read_text()
