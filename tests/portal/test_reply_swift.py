"""A secure reply into a vault whose objects are in Swift: streamed into Swift as it
arrives, kept only whole (a reply too large leaves no object there), opened byte for byte."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.outbox import Outbox
from gateway.preflight import template_dirs
from gateway.transform.sender import SenderMail
from gateway.vault import Vault
from tests.portal.helpers import run, serve
from tests.portal.test_reply import DATA, NAMES, TEXT, Setup, form, link_in, post, sealed_reply
from tests.swiftaio import SwiftAio


@pytest.fixture
def setup(tmp_path: Path, swift: SwiftAio) -> Iterator[Setup]:
    made = Setup(tmp_path)
    made.vault = Vault(made.settings.vault_dir, store=swift.new_store())
    made.outbox = Outbox(made.spool, made.vault,
                         SenderMail(made.settings, template_dirs(made.settings)))
    yield made
    made.vault.close()


def test_a_reply_is_kept_in_swift_whole_and_opens(setup: Setup) -> None:
    link = setup.seal(max_bytes=100_000)
    reply_id, secret, objects = sealed_reply()
    too_big = sealed_reply((b"x" * 150_000,), ("big.bin",))

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        async with serve(setup.vault, setup.settings, notices=setup.outbox) as client:
            return [await post(client, link, form(*too_big)),
                    await post(client, link, form(reply_id, secret, objects))]

    refused, accepted = run(scenario)
    assert refused[0] == 413 and accepted[0] == 200
    assert too_big[0] not in setup.vault.store.link_ids()
    assert setup.vault.get(too_big[0]) is None
    [(_, _, raw)] = setup.queued()
    assert link_in(raw) == (reply_id, secret)
    info = setup.vault.get(reply_id)
    assert info is not None
    names = {e["name"] for e in setup.vault.store._listing(prefix=reply_id + "/")}  # type: ignore[attr-defined]
    assert names == {f"{reply_id}/{o.id}" for o in info.objects}
    assert not (setup.vault.root / "objects" / reply_id).exists()
    manifest = setup.vault.read_manifest(reply_id, secret)
    assert manifest.text == TEXT and [f.name for f in manifest.files] == list(NAMES)
    for file, data in zip(manifest.files, DATA, strict=True):
        assert b"".join(setup.vault.read_file(reply_id, secret, file.object_id)) == data
