"""pli.toml validation: mistakes get an error that names the setting."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import Settings, SwiftObjects, load_settings
from gateway.errors import ConfigError
from gateway.initdir import InitOptions, init_dir, render_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pli.toml"
    path.write_text(text)
    return path


def test_the_file_pli_init_writes_is_valid_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    init_dir(tmp_path / "cab", InitOptions(domain="cabinet-martin.fr"))
    settings = load_settings(tmp_path / "cab" / "pli.toml")
    assert settings.tls.cert == (tmp_path / "cab" / "tls" / "cert.pem").resolve()
    assert settings.data_dir == (tmp_path / "cab" / "data").resolve()
    assert settings.hostname == "pli.cabinet-martin.fr"
    assert (tmp_path / "cab" / "data").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "cab" / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600


def test_init_never_overwrites_a_configuration(tmp_path: Path) -> None:
    init_dir(tmp_path, InitOptions())
    with pytest.raises(ConfigError, match="already exists"):
        init_dir(tmp_path, InitOptions())


def test_a_misspelt_setting_is_an_error_naming_it(tmp_path: Path) -> None:
    text = render_config(InitOptions()).replace("session_timeout", "sesion_timeout")
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert "sesion_timeout: unknown setting" in str(err.value)


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = render_config(InitOptions()).replace("port = 587\n", "port = 70000\n", 1)
    text = text.replace('security = "starttls"', 'security = "ssl"')
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    message = str(err.value)
    assert "submission.port" in message
    assert "upstream.0.security" in message


def test_a_provider_password_in_clear_over_the_network_is_refused(tmp_path: Path) -> None:
    text = render_config(InitOptions(upstream_host="smtp.example.net",
                                     upstream_security="none"))
    text = text.replace('# username = "cabinet@example.fr"', 'username = "cabinet@example.fr"')
    text = text.replace('# password_file = "upstream-password"', 'password_file = "pw"')
    with pytest.raises(ConfigError, match="password in clear"):
        load_settings(write(tmp_path, text))


def test_a_username_without_a_password_source_is_refused(tmp_path: Path) -> None:
    text = render_config(InitOptions()).replace('# username = "cabinet@example.fr"',
                                                'username = "cabinet@example.fr"')
    with pytest.raises(ConfigError, match="password_file or password_credential"):
        load_settings(write(tmp_path, text))


def test_broken_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "hostname = \n"))
    assert "pli.toml" in str(err.value) and "line 1" in str(err.value)


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pli init"):
        load_settings(tmp_path / "nope.toml")


def test_the_upstream_is_chosen_by_sender(tmp_path: Path) -> None:
    text = render_config(InitOptions()).replace('name = "default"\nsenders = ["*"]',
                                                'name = "martin"\nsenders = ["@cabinet-martin.fr"]')
    text += '\n[[upstream]]\nname = "other"\nhost = "smtp.other.example"\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.upstream_for("Dr@Cabinet-Martin.fr").name == "martin"  # type: ignore[union-attr]
    assert settings.upstream_for("x@elsewhere.fr").name == "other"  # type: ignore[union-attr]


def test_a_password_credential_is_read_from_the_systemd_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = render_config(InitOptions()).replace(
        '# username = "cabinet@example.fr"', 'username = "cabinet@example.fr"').replace(
        '# password_credential = "upstream"', 'password_credential = "upstream"')
    settings = load_settings(write(tmp_path, text))
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "upstream").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert settings.upstream[0].password() == "s3cret"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="LoadCredential"):
        settings.upstream[0].password()


@pytest.mark.parametrize("given, kept", [
    ("pli.cabinet-martin.fr", "pli.cabinet-martin.fr"), ("localhost", "localhost"),
    ("pli.cabinet-martin.fr.", "pli.cabinet-martin.fr"), ("NAS_Cabinet.local", "NAS_Cabinet.local"),
    ("pli.xn--cabinet-sant-meb.fr", "pli.xn--cabinet-sant-meb.fr"),
])
def test_a_host_name_is_kept(tmp_path: Path, given: str, kept: str) -> None:
    text = render_config(InitOptions()).replace('hostname = "pli.localdomain"',
                                                f"hostname = {json.dumps(given)}")
    assert load_settings(write(tmp_path, text)).hostname == kept


@pytest.mark.parametrize("given", ["pli cabinet", "pli.cabinet-santé.fr", "-pli.fr", "",
                                   "pli..fr", "pli.fr\r\nBcc: x@y.fr"])
def test_a_name_that_cannot_be_a_host_name_is_refused_in_words(tmp_path: Path, given: str) -> None:
    text = render_config(InitOptions()).replace('hostname = "pli.localdomain"',
                                                f"hostname = {json.dumps(given)}")
    with pytest.raises(ConfigError, match="hostname.*xn--"):
        load_settings(write(tmp_path, text))


XOAUTH2 = ('username = "cabinet@cabinet-martin.fr"\nauth = "xoauth2"\n\n[upstream.oauth]\n'
           'provider = "microsoft365"\ntenant = "cabinet-martin.fr"\n'
           'client_id = "3f1c9a52-7d1e-4a8b-9c55-0e2b7a61d4f0"\n'
           'client_secret_file = "client-secret"\n')


def with_upstream(lines: str) -> str:
    text = render_config(InitOptions(upstream_host="smtp.office365.com"))
    anchor = "verify_certificate = true\n"
    assert text.count(anchor) == 1
    return text.replace(anchor, anchor + lines)


def test_an_xoauth2_account_takes_its_table_and_knows_the_providers_defaults(
        tmp_path: Path) -> None:
    account = load_settings(write(tmp_path, with_upstream(XOAUTH2))).upstream[0]
    assert account.auth == "xoauth2" and account.oauth is not None
    assert account.oauth.client_secret_file == tmp_path / "client-secret"  # beside pli.toml
    assert account.oauth.default_token_url() == (
        "https://login.microsoftonline.com/cabinet-martin.fr/oauth2/v2.0/token")
    assert account.oauth.default_scope() == "https://outlook.office365.com/.default"


@pytest.mark.parametrize("change, error", [
    (lambda t: t.replace('auth = "xoauth2"\n', ""), "auth = \"password\""),
    (lambda t: t.replace('username = "cabinet@cabinet-martin.fr"\n', ""), "needs username"),
    (lambda t: t.split("\n\n[upstream.oauth]")[0] + "\n", "needs an [upstream.oauth] table"),
    (lambda t: t.replace('client_secret_file = "client-secret"\n', ""),
     "one of client_secret_file, client_secret_credential or certificate_file"),
    (lambda t: t + 'certificate_file = "entra.pem"\n', "one of client_secret_file"),
    (lambda t: t.replace('client_secret_file = "client-secret"\n',
                         'certificate_file = "entra.pem"\n'), "needs its key"),
    (lambda t: t + 'service_account_file = "sa.json"\n', "not used with provider"),
    (lambda t: t + 'token_url = "http://login.example.net/token"\n', "https://"),
    (lambda t: t.replace('provider = "microsoft365"', 'provider = "google"'),
     "not used with provider = \"google\""),
    (lambda t: t + 'password_file = "pw"\n', "unknown setting"),  # in the oauth table
])
def test_an_xoauth2_account_that_cannot_get_a_token_is_refused_in_words(
        tmp_path: Path, change: object, error: str) -> None:
    text = change(XOAUTH2)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, with_upstream(text)))
    assert error in str(err.value), str(err.value)


@pytest.mark.parametrize("where, line", [
    ("account", 'password = "provider side secret"\n'),
    ("oauth", 'client_secret = "entra side secret"\n'),
    ("oauth", 'private_key = "-----BEGIN PRIVATE KEY-----"\n'),
])
def test_a_secret_written_in_pli_toml_itself_is_refused(
        tmp_path: Path, where: str, line: str) -> None:
    """The README's threat model: the provider password, a client secret or a key never
    go in pli.toml; each is a file of its own or a systemd credential."""
    text = (XOAUTH2.replace("\n\n[upstream.oauth]", "\n" + line + "\n[upstream.oauth]")
            if where == "account" else XOAUTH2 + line)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, with_upstream(text)))
    assert f"{line.split(' =')[0]}: unknown setting" in str(err.value), str(err.value)


def test_an_access_token_goes_to_the_provider_only_inside_tls(tmp_path: Path) -> None:
    text = with_upstream(XOAUTH2).replace('security = "starttls"', 'security = "none"')
    with pytest.raises(ConfigError, match="access token in clear"):
        load_settings(write(tmp_path, text))
    on_loopback = text.replace('host = "smtp.office365.com"', 'host = "127.0.0.1"')
    assert load_settings(write(tmp_path, on_loopback)).upstream[0].security == "none"


def test_a_token_url_on_loopback_may_be_plain_http(tmp_path: Path) -> None:
    text = XOAUTH2 + 'token_url = "http://127.0.0.1:8400/token"\n'
    account = load_settings(write(tmp_path, with_upstream(text))).upstream[0]
    assert account.oauth is not None
    assert account.oauth.default_token_url() == "http://127.0.0.1:8400/token"


def test_paths_left_to_their_defaults_are_relative_to_the_configuration_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd the working folder is /: a pli.toml without data_dir must not put
    the spool, vault and audit trail in /data."""
    folder = tmp_path / "etc-pli"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    settings = load_settings(write(folder, '[tls]\ncert = "c.pem"\nkey = "k.pem"\n'
                                   '[[upstream]]\nhost = "smtp.example.net"\n'))
    resolved = folder.resolve()
    assert (settings.data_dir, settings.users_file) == (resolved / "data",
                                                        resolved / "users.toml")
    assert settings.spool_dir == resolved / "data" / "spool"


README = Path(__file__).resolve().parents[1] / "README.md"
MiB, DAY = 1024 * 1024, 86400.0
Check = tuple[str, Callable[[Settings, Path], bool]]
SETTINGS_TABLE: dict[str, list[Check]] = {
    # Each row of the README's pli.toml table: what the row says (quoted as it stands)
    # and what a configuration `pli init` writes gives, read as `pli run` reads it.
    "`hostname`": [("| `pli.<domain>` |", lambda s, d: s.hostname == "pli.cabinet-martin.fr")],
    "`instance`": [("| the host name |", lambda s, d: s.instance == socket.gethostname())],
    "`data_dir`": [("| `data` |", lambda s, d: s.data_dir == d / "data")],
    "`users_file`": [("| `users.toml` |", lambda s, d: s.users_file == d / "users.toml")],
    "`max_message_size`": [("| 150 MiB |", lambda s, d: s.max_message_size == 150 * MiB)],
    "`session_timeout`": [("| 600 s |", lambda s, d: s.session_timeout == 600)],
    "`login_timeout`": [("| 300 s |", lambda s, d: s.login_timeout == 300)],
    "`max_sessions`, `max_sessions_per_client`": [
        ("| 200, 50 |", lambda s, d: (s.max_sessions, s.max_sessions_per_client) == (200, 50))],
    "`log_level`": [("| `info` |", lambda s, d: s.log_level == "info")],
    "`[tls] cert, key`": [("| `tls/cert.pem`, `tls/key.pem`, from the practice CA |",
                           lambda s, d: (s.tls.cert, s.tls.key)
                           == (d / "tls" / "cert.pem", d / "tls" / "key.pem"))],
    "`[submission]`": [("| port 587 |", lambda s, d: s.submission.port == 587)],
    "`[submissions]`": [("| port 465 |", lambda s, d: s.submissions.port == 465)],
    "`[[upstream]]`": [
        ("`verify_certificate` (on)", lambda s, d: s.upstream[0].verify_certificate),
        ("unset by default", lambda s, d: all(getattr(s.upstream[0], f"max_{n}") is None for n in (
            "messages_per_minute", "recipients_per_message", "recipients_per_day",
            "messages_per_day")))],
    "`[delivery]`": [
        ("`concurrency` (3:", lambda s, d: s.delivery.concurrency == 3),
        ("`max_connections` (20:", lambda s, d: s.delivery.max_connections == 20),
        ("`retry_min` (300 s)", lambda s, d: s.delivery.retry_min == 300),
        ("`retry_max` (4000 s)", lambda s, d: s.delivery.retry_max == 4000),
        ("`lifetime` (5 days)", lambda s, d: s.delivery.lifetime == 5 * DAY),
        ("`command_timeout` (300 s)", lambda s, d: s.delivery.command_timeout == 300),
        ("`data_timeout` (600 s:", lambda s, d: s.delivery.data_timeout == 600)],
    "`[practice]`": [],
    "`[portal]`": [
        ("`port` (8080)", lambda s, d: s.portal.port == 8080),
        ("`trusted_proxies` (loopback)",
         lambda s, d: all(ipaddress.ip_address(a).is_loopback for a in s.portal.trusted_proxies))],
    "`[metrics]`": [("(127.0.0.1:9925)",
                     lambda s, d: (s.metrics.host, s.metrics.port) == ("127.0.0.1", 9925))],
    "`[mssante_whitelist]`": [
        ("`list` (`mssante-whitelist`", lambda s, d: s.mssante_whitelist.list == "mssante-whitelist"),
        ("`timeout` (60 s)", lambda s, d: s.mssante_whitelist.timeout == 60),
        ("`url` (the ANS's, https only)", lambda s, d: s.mssante_whitelist.url
         == "https://espacedeconfiance.mssante.fr/listeblanchemssante.xml")],
    "`[audit]`": [("`retention_days` (365)", lambda s, d: s.audit.retention_days == 365),
                  ("`max_file_mb` (16)", lambda s, d: s.audit.max_file_mb == 16)],
    "`[vault]`": [('`objects = "files"`', lambda s, d: s.vault.objects == "files"),
                  ("`timeout` (30 s)",
                   lambda s, d: SwiftObjects.model_fields["timeout"].default == 30)],
    "`[auth]`": [("`delay_after` (2 failures)", lambda s, d: s.auth.delay_after == 2),
                 ("`max_failures` (5 in `window` = 600 s)",
                  lambda s, d: (s.auth.max_failures, s.auth.window) == (5, 600)),
                 ("`lockout` (900 s)", lambda s, d: s.auth.lockout == 900)],
}


def settings_table_rows() -> dict[str, str]:
    """The README's pli.toml table: each row's first cell, and the whole row."""
    text = README.read_text(encoding="utf-8")
    table = text.split("### pli.toml", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines()[2:] if line.startswith("| ")]
    return {row.split(" | ", 1)[0][2:]: row for row in rows}


def test_the_settings_table_says_the_defaults_pli_init_and_pli_run_use(tmp_path: Path) -> None:
    """Every row of the README's table is checked here, so a new row needs its check; a
    default changed in the code, in `pli init`'s file or in the README alone fails."""
    rows = settings_table_rows()
    assert set(rows) == set(SETTINGS_TABLE)
    init_dir(tmp_path / "cab", InitOptions(domain="cabinet-martin.fr"))
    folder = (tmp_path / "cab").resolve()
    written = load_settings(folder / "pli.toml")
    # A pli.toml written by hand, with only what has no default: the same defaults.
    by_hand = load_settings(write(tmp_path, '[tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'
                                  '[[upstream]]\nhost = "smtp.example.net"\n'))
    wrong = [(name, said) for name, checks in SETTINGS_TABLE.items()
             for said, holds in checks if said not in rows[name]
             or not holds(written, folder)
             or (name != "`hostname`" and not holds(by_hand, tmp_path.resolve()))]
    assert not wrong
    assert by_hand.hostname == "pli.localdomain"  # no domain to name it after
