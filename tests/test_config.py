"""pli.toml validation: mistakes get an error that names the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import load_settings
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


def test_a_token_url_on_loopback_may_be_plain_http(tmp_path: Path) -> None:
    text = XOAUTH2 + 'token_url = "http://127.0.0.1:8400/token"\n'
    account = load_settings(write(tmp_path, with_upstream(text))).upstream[0]
    assert account.oauth is not None
    assert account.oauth.default_token_url() == "http://127.0.0.1:8400/token"
