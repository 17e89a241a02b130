"""The [vault] table: where the sealed objects go (files, or an OpenStack Swift container),
validated with sentences, and checked for real by `pli check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import build_object_store
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.initdir import InitOptions, render_config
from gateway.vault.store import FileStore
from gateway.vault.swift import SwiftStore
from tests.swiftaio import SwiftAio
from tests.test_cli import pli

SWIFT = """
[vault]
objects = "swift"

[vault.swift]
auth_url = "https://auth.swift.example/auth/v1.0"
user = "cabinet:pli"
key_file = "swift.key"
container = "pli-cabinet-martin"
"""


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "pli.toml"
    path.write_text(render_config(InitOptions()) + extra)
    return path


def problem(tmp_path: Path, extra: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, extra))
    return str(caught.value)


def test_the_objects_are_files_unless_pli_toml_says_swift(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert settings.vault.objects == "files"
    assert isinstance(build_object_store(settings), FileStore)


def test_a_swift_table_is_read_with_its_key_file_beside_pli_toml(tmp_path: Path) -> None:
    (tmp_path / "swift.key").write_text("s3cret\n")
    settings = load_settings(write(tmp_path, SWIFT))
    swift = settings.vault.swift
    assert swift is not None and settings.vault.objects == "swift"
    assert swift.key_file == (tmp_path / "swift.key").resolve()
    assert swift.key() == "s3cret"
    store = build_object_store(settings)
    assert isinstance(store, SwiftStore) and store.container == "pli-cabinet-martin"


@pytest.mark.parametrize(("change", "said"), [
    (lambda t: t.replace('objects = "swift"', 'objects = "s3"'), "vault.objects"),
    (lambda t: t[:t.index("[vault.swift]")], "needs a [vault.swift] table"),
    (lambda t: t.replace('objects = "swift"', 'objects = "files"'),
     'set objects = "swift" to keep the objects there'),
    (lambda t: t.replace('key_file = "swift.key"\n', ""), "give key_file or key_credential"),
    (lambda t: t.replace('key_file = "swift.key"', 'key_file = "k"\nkey_credential = "k"'),
     "give key_file or key_credential, one of them"),
    (lambda t: t.replace("https://auth.swift.example", "http://auth.swift.example"),
     "must be an https:// address"),
    (lambda t: t.replace("pli-cabinet-martin", "pli/cabinet"), "must be a container name"),
    (lambda t: t.replace('container = "pli-cabinet-martin"\n', ""), "vault.swift.container"),
    (lambda t: t.replace("user = ", "usr = "), "vault.swift.usr: unknown setting"),
])
def test_a_bad_vault_table_is_refused_in_words(tmp_path: Path, change: object,
                                               said: str) -> None:
    assert said in problem(tmp_path, change(SWIFT))  # type: ignore[operator]


def test_http_is_allowed_on_loopback_only(tmp_path: Path) -> None:
    (tmp_path / "swift.key").write_text("k")
    local = SWIFT.replace("https://auth.swift.example", "http://127.0.0.1:8080")
    assert load_settings(write(tmp_path, local)).vault.swift is not None


def test_pli_check_says_whether_swift_takes_the_key(tmp_path: Path, swift: SwiftAio) -> None:
    config = write(tmp_path, swift.vault_table("pli-check").replace(
        f'key_file = "{swift.key_file}"', 'key_file = "swift.key"'))
    (tmp_path / "swift.key").write_text(swift.key + "\n")
    checked = pli("check", "-c", str(config))
    assert "vault" not in checked.stderr, checked.stderr
    (tmp_path / "swift.key").write_text("not the key\n")
    checked = pli("check", "-c", str(config))
    assert checked.returncode == 1
    assert (f"vault: Swift at 127.0.0.1 refused the user '{swift.user}' and its key"
            in checked.stderr), checked.stderr
    assert "protected messages would be refused (451)" in checked.stderr
    (tmp_path / "swift.key").unlink()
    checked = pli("check", "-c", str(config))
    assert "vault: [vault.swift]: cannot read the key from" in checked.stderr, checked.stderr


def test_pli_check_reports_a_bad_vault_table_in_a_sentence(tmp_path: Path) -> None:
    config = write(tmp_path, '\n[vault]\nobjects = "swift"\n')
    checked = pli("check", "-c", str(config))
    assert checked.returncode != 0
    assert 'vault: Value error, objects = "swift" needs a [vault.swift] table: auth_url, ' \
        "user, key_file or key_credential, container" in checked.stderr, checked.stderr


def test_a_message_size_swift_cannot_take_in_one_object_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, SWIFT)
    text = path.read_text()
    assert "max_message_size = 157286400" in text
    path.write_text(text.replace("max_message_size = 157286400",
                                 f"max_message_size = {6 * 1024**3}"))
    with pytest.raises(ConfigError, match="more than Swift takes in one object"):
        load_settings(path)
