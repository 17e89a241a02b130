"""The sender's receipt: the code when Pli made it, the notices that will come, and the
link to the sender's own page, whose secret never reaches the recipients."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.preflight import template_dirs
from gateway.transform import Protector
from gateway.vault import Vault
from tests.support import ADDRESS, make_gateway
from tests.transform.test_protect import _all_text, link_of, original, protect


def setup_in(tmp_path: Path) -> tuple[Vault, Protector, Path]:
    gw = make_gateway(tmp_path / "pli", policy=None)
    settings = gw.settings()
    vault = Vault(settings.vault_dir)
    return vault, Protector(vault, settings, template_dirs(settings),
                            tag_names=lambda: frozenset({"code"})), gw.folder


def manage_of(receipt: str) -> tuple[str, str]:
    found = re.search(r"/m/([A-Za-z0-9_-]{22})#([A-Za-z0-9_-]{43})", receipt)
    assert found, receipt
    return found.group(1), found.group(2)


def test_the_receipt_carries_the_senders_own_link_and_the_notice_does_not(
        tmp_path: Path) -> None:
    vault, protector, _ = setup_in(tmp_path)
    result = protect(protector, original(), access_code="generated",
                     notify=("opened", "downloaded"))
    notice, receipt = result.outgoing
    assert receipt.recipients == (ADDRESS,)
    text = _all_text(receipt.content)
    link_id, secret = manage_of(text)
    assert link_id == result.link_id and vault.check_manage(link_id, secret)
    patient_link, patient_secret = link_of(notice.content)
    assert patient_secret != secret
    assert secret.encode() not in notice.content and b"/m/" not in notice.content
    assert patient_secret not in text  # nor the patient's key in the receipt
    assert ("Vous recevrez un avis par e-mail quand le message sera ouvert pour la "
            "première fois et à chaque téléchargement d'un document.") in " ".join(text.split())
    info = vault.get(result.link_id)
    assert info is not None and info.options.notify == ("opened", "downloaded")


def test_without_notices_the_receipt_says_none_will_come(tmp_path: Path) -> None:
    _, protector, _ = setup_in(tmp_path)
    receipt = protect(protector, original(), access_code="generated").outgoing[1]
    assert "Vous ne recevrez pas d'avis sur ce message." in _all_text(receipt.content)


def test_a_code_the_sender_chose_is_never_written_in_the_receipt(tmp_path: Path) -> None:
    vault, protector, _ = setup_in(tmp_path)
    result = protect(protector, original("Résultats [code:Sntl4821]"),
                     access_code="sender-tag", language="en")
    notice, receipt = result.outgoing
    text = _all_text(receipt.content)
    assert "Sntl4821" not in text and b"Sntl4821" not in receipt.content
    assert "the one you wrote in the subject" in text
    assert vault.check_code(result.link_id, "Sntl4821").ok
    manage_of(text)


def test_the_links_maxima_and_reply_bounds_come_from_the_decision(tmp_path: Path) -> None:
    vault, protector, _ = setup_in(tmp_path)
    result = protect(protector, original(), expiry_days=3, max_expiry_days=30,
                     download_limit=1, max_download_limit=4, reply_max_files=2,
                     reply_max_bytes=1000)
    info = vault.get(result.link_id)
    assert info is not None
    assert round((info.max_expires - info.expires) / 86400) == 27
    assert (info.download_limit, info.max_download_limit) == (1, 4)
    assert (info.options.reply_max_files, info.options.reply_max_bytes) == (2, 1000)


def test_a_practices_receipt_from_before_the_senders_link_keeps_the_old_way(
        tmp_path: Path) -> None:
    vault, protector, folder = setup_in(tmp_path)
    receipt = folder / "templates" / "fr" / "default" / "receipt.txt"
    receipt.write_text("Bonjour,\n\nCode d'accès :\n\n    $code\n\nRéférence : $link_id\n",
                       encoding="utf-8")
    tagged = protect(protector, original("R [code:4821]"), access_code="sender-tag")
    assert len(tagged.outgoing) == 1  # no code to tell, no sender's link to give
    info = vault.get(tagged.link_id)
    assert info is not None and not info.has_manage
    generated = protect(protector, original(), access_code="generated")
    text = _all_text(generated.outgoing[1].content)
    assert re.search(r"^\s+\d{6}\s*$", text, re.M) and "/m/" not in text
