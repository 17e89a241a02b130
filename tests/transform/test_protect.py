"""Protect: the original goes into the vault, the recipients get a notice that holds none
of it. Each test reads the link back from the vault, as the patient's browser would."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.inspect import inspect
from gateway.intake.data import normalise_line_endings
from gateway.message.model import Message
from gateway.preflight import template_dirs
from gateway.transform import Protector
from gateway.transform.extract import extract
from gateway.types import ProtectSettings
from gateway.vault import Vault
from tests.support import ADDRESS, Gateway, body_bytes, make_gateway

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% SENTINEL-PDF-BYTES-93c1\n%%EOF\n"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
       b"\x00\x00\x00\x1f\x15\xc4\x89" + b"\x00" * 64)
SUBJECT = "Résultats de biopsie de M. Sentinelsubject"
BODY = "Le prélèvement montre une lésion sentinelbody bénigne."
FILENAME = "biopsie-sentinelname.pdf"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Gateway, Vault, Protector]:
    gw = make_gateway(tmp_path / "pli", policy=None)
    settings = gw.settings()
    vault = Vault(settings.vault_dir)
    protector = Protector(vault, settings, template_dirs(settings),
                          tag_names=lambda: frozenset({"code", "clair"}))
    return gw, vault, protector


def original(subject: str = SUBJECT) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Dr Martin <{ADDRESS}>"
    msg["To"] = "Patient <patient@gmail.com>"
    msg["Cc"] = "famille@orange.fr"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Nov 2026 09:15:00 +0100"
    msg["Message-ID"] = "<original-1@cabinet-martin.fr>"
    msg["In-Reply-To"] = "<earlier@gmail.com>"
    msg["References"] = "<earlier@gmail.com>"
    msg["Thread-Topic"] = "Résultats sentinelthread"
    msg["Thread-Index"] = "AdlQ1sentinel=="
    msg["Keywords"] = "biopsie sentinelkeyword"
    msg["Comments"] = "sentinelcomment"
    msg["X-Subject-Echo"] = "sentinelxheader"
    msg.set_content(BODY)
    msg.add_alternative(f"<p>{BODY}</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename=FILENAME)
    return msg


@dataclass(frozen=True)
class Copy:
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes


@dataclass(frozen=True)
class Result:
    outgoing: list[Copy]
    link_id: str
    access_code: str


def protect_bytes(protector: Protector, raw: bytes, **how: object) -> Result:
    """Protect a message as the pipeline does: taken apart once, then sealed; the copies
    are returned as the spool would write them."""
    message = Message.from_bytes(normalise_line_endings(raw))
    parts = extract(message, inspect(message))
    protected = protector.protect(message, parts, ADDRESS, ("patient@gmail.com",),
                                  ProtectSettings(**how))  # type: ignore[arg-type]
    return Result([Copy(o.mail_from, o.recipients, body_bytes(o.body, message))
                   for o in protected.outgoing], protected.link_id, protected.access_code)


def protect(protector: Protector, msg: EmailMessage, **how: object) -> Result:
    return protect_bytes(protector, msg.as_bytes(), **how)


def link_of(notice: bytes) -> tuple[str, str]:
    found = re.search(rb"/l/([A-Za-z0-9_-]+)#([A-Za-z0-9_-]+)", notice.replace(b"=\r\n", b""))
    assert found, "the notice carries a link"
    return found.group(1).decode(), found.group(2).decode()


def test_the_notice_holds_no_subject_body_file_name_or_attachment_byte(setup) -> None:
    _, _, protector = setup
    result = protect(protector, original())
    notice = result.outgoing[0].content
    decoded = _all_text(notice)
    for secret in ("Sentinelsubject", "sentinelbody", "sentinelname", "SENTINEL-PDF",
                   "sentinelthread", "sentinelkeyword", "sentinelcomment", "sentinelxheader",
                   "AdlQ1sentinel", "biopsie"):
        assert secret.lower() not in decoded.lower(), secret
        assert secret.encode() not in notice
    assert base64.b64encode(PDF)[:40] not in notice


def test_the_link_opens_the_original_text_and_files_without_the_code_tag(setup) -> None:
    _, vault, protector = setup
    result = protect(protector, original(SUBJECT + " [code:4821]"), access_code="sender-tag")
    link_id, secret = link_of(result.outgoing[0].content)
    assert link_id == result.link_id
    manifest = vault.read_manifest(link_id, secret)
    assert manifest.subject == SUBJECT
    assert BODY in (manifest.text or "") and BODY in (manifest.html or "")
    assert [f.name for f in manifest.files] == [FILENAME]
    assert manifest.files[0].true_type == "application/pdf"
    assert b"".join(vault.read_file(link_id, secret, manifest.files[0].object_id)) == PDF
    assert vault.check_code(link_id, "4821").ok


def test_the_notice_is_valid_mime_and_keeps_only_headers_without_content(setup) -> None:
    _, _, protector = setup
    notice = protect(protector, original()).outgoing[0].content
    parsed = email.message_from_bytes(notice, policy=email.policy.default)
    assert all(len(line) <= 998 for line in notice.split(b"\r\n"))
    assert parsed["From"] == f"Dr Martin <{ADDRESS}>"
    assert parsed["To"] == "Patient <patient@gmail.com>"
    assert parsed["Cc"] == "famille@orange.fr"
    assert parsed["Date"] == "Mon, 02 Nov 2026 09:15:00 +0100"
    assert parsed["In-Reply-To"] == parsed["References"] == "<earlier@gmail.com>"
    assert parsed["Message-ID"] != "<original-1@cabinet-martin.fr>"
    assert parsed["Subject"] == "Message sécurisé : Votre cabinet"
    for gone in ("Thread-Topic", "Thread-Index", "Keywords", "Comments", "X-Subject-Echo"):
        assert gone not in parsed
    assert parsed.get_content_type() == "multipart/alternative"
    for part in parsed.iter_parts():
        assert part["Content-Transfer-Encoding"]
        assert part.get_content_charset() == "utf-8"


def test_protect_does_not_decide_again_what_the_policy_settled(setup) -> None:
    """A sender-tag decision for a message without a tag cannot reach the protector (the
    policy refuses such a message); if it did, nothing would be sealed."""
    _, vault, protector = setup
    with pytest.raises(ValueError):
        protect(protector, original(), access_code="sender-tag")
    with pytest.raises(ValueError):
        protect(protector, original(), access_code="sender-tag-or-generated")
    assert vault.links() == []


def test_a_generated_code_goes_to_the_sender_alone_in_a_receipt(setup) -> None:
    _, vault, protector = setup
    result = protect(protector, original(), access_code="generated")
    notice, receipt = result.outgoing
    assert receipt.recipients == (ADDRESS,) and receipt.mail_from == ADDRESS
    text = _all_text(receipt.content)
    code = re.search(r"^\s+(\d{6})\s*$", text, re.M)
    assert code, text
    assert "patient@gmail.com" in text and result.link_id in text
    assert code.group(1) not in _all_text(notice.content)
    assert vault.check_code(result.link_id, code.group(1)).ok
    assert "Sentinelsubject" not in text  # the receipt names the recipient, not the subject


def test_with_no_code_the_notice_does_not_mention_one(setup) -> None:
    _, vault, protector = setup
    result = protect(protector, original(), access_code="none")
    notice, receipt = result.outgoing  # the receipt carries the sender's link
    assert "code d'accès" not in _all_text(notice.content)
    assert "pas de code d'accès" in _all_text(receipt.content)
    assert vault.check_code(result.link_id, "").ok
    alone = protect(protector, original(), access_code="none", manage_link=False)
    assert len(alone.outgoing) == 1


def test_every_kind_of_attachment_goes_to_the_vault(setup) -> None:
    _, vault, protector = setup
    msg = EmailMessage()
    msg["From"] = ADDRESS
    msg["To"] = "patient@gmail.com"
    msg["Subject"] = "x"
    uu = "begin 644 scan-uu.bin\n" + "".join(
        __import__("binascii").b2a_uu(PDF[i:i + 45]).decode() for i in range(0, len(PDF), 45)
    ) + "`\nend\n"
    msg.set_content("Voir ci-joint.\n" + uu)
    data_uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    msg.add_alternative(f'<p>Voir <img src="{data_uri}"></p>', subtype="html")
    forwarded = EmailMessage()
    forwarded["Subject"] = "inner"
    forwarded.set_content("inner text")
    msg.add_attachment(forwarded)
    msg.add_attachment(b"\x78\x9f\x3e\x22" + b"\x00" * 40, maintype="application",
                       subtype="ms-tnef", filename="winmail.dat")
    msg.add_attachment("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", subtype="calendar")
    msg.add_attachment(PNG, maintype="image", subtype="png", disposition="inline")
    result = protect(protector, msg)
    link_id, secret = link_of(result.outgoing[0].content)
    manifest = vault.read_manifest(link_id, secret)
    declared = sorted(f.declared_type for f in manifest.files)
    assert declared == sorted(["application/x-uuencode", "image/png", "message/rfc822",
                               "application/ms-tnef", "text/calendar", "image/png"])
    contents = [b"".join(vault.read_file(link_id, secret, f.object_id)) for f in manifest.files]
    assert PDF in contents and PNG in contents
    assert "begin 644" not in (manifest.text or "") and "data:image" not in (manifest.html or "")
    assert b"VCALENDAR" not in result.outgoing[0].content


def test_a_huge_message_becomes_a_small_notice(setup) -> None:
    _, _, protector = setup
    msg = original()
    msg.add_attachment(b"\x00" * (20 * 1024 * 1024), maintype="application",
                       subtype="octet-stream", filename="scan.bin")
    notice = protect(protector, msg).outgoing[0].content
    assert len(notice) < 16 * 1024


def test_keep_settings_leave_what_the_rule_asks_in_the_mail(setup) -> None:
    _, _, protector = setup
    msg = original()
    html = msg.get_body(("html",))
    assert html is not None
    html.set_content('<p>Bonjour</p><img src="cid:logo@cabinet">', subtype="html")
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo@cabinet>")
    notice = protect(protector, msg, body="keep", subject="keep", attachments="link",
                     keep_inline_images=True).outgoing[0].content
    parsed = email.message_from_bytes(notice, policy=email.policy.default)
    assert parsed["Subject"] == SUBJECT
    assert BODY in _all_text(notice)
    assert FILENAME.encode() not in notice and b"SENTINEL-PDF" not in notice
    images = [p for p in parsed.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0]["Content-ID"] == "<logo@cabinet>"


def test_english_notices_come_from_the_english_templates(setup) -> None:
    _, _, protector = setup
    notice = protect(protector, original(), language="en").outgoing[0].content
    parsed = email.message_from_bytes(notice, policy=email.policy.default)
    assert parsed["Subject"] == "Secure message from Votre cabinet"
    assert "To read it, open this link" in _all_text(notice)


def test_a_header_that_decodes_to_a_line_break_never_reaches_the_notice(setup) -> None:
    _, _, protector = setup
    raw = original().as_bytes().replace(
        b"To: Patient <patient@gmail.com>",
        b"To: =?utf-8?q?Patient=0D=0ABcc=3A_spy=40evil=2Eexample?= <patient@gmail.com>")
    notice = protect_bytes(protector, raw).outgoing[0].content
    headers = notice.split(b"\r\n\r\n")[0]
    assert b"\nBcc:" not in headers and b"spy@evil" not in headers


def _all_text(message_bytes: bytes) -> str:
    parsed = email.message_from_bytes(message_bytes, policy=email.policy.default)
    texts = [str(v) for _, v in parsed.items()]
    for part in parsed.walk():
        if part.get_content_maintype() == "text":
            texts.append(part.get_content())
    return "\n".join(texts)




def test_a_text_part_that_is_neither_plain_nor_html_goes_to_the_vault(setup) -> None:
    _, vault, protector = setup
    msg = original()
    msg.add_attachment("nom;date\nDupont;2026-11-02\n", subtype="csv", disposition="inline")
    del msg.get_payload()[-1]["Content-Disposition"]  # no file name, no disposition
    result = protect(protector, msg)
    link_id, secret = link_of(result.outgoing[0].content)
    manifest = vault.read_manifest(link_id, secret)
    assert "text/csv" in [f.declared_type for f in manifest.files]


def test_every_leaf_part_of_any_type_goes_to_the_vault_and_an_empty_multipart_does_not(
        setup) -> None:
    """A delivery report, headers of a returned message, a part with no type at all: each
    is sealed as a file; an empty multipart/alternative is no document."""
    _, vault, protector = setup
    raw = (f"From: {ADDRESS}\r\nTo: patient@gmail.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
           "--m\r\nContent-Type: text/plain\r\n\r\nLe corps.\r\n"
           "--m\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
           "Final-Recipient: rfc822; a@b.fr\r\nAction: failed\r\n"
           "--m\r\nContent-Type: message/rfc822-headers\r\n\r\nSubject: retour sentinelrh\r\n"
           "--m\r\nContent-Type: multipart/alternative; boundary=\"empty\"\r\n\r\n"
           "--m\r\nContent-Disposition: attachment\r\n\r\nsans type\r\n"
           "--m--\r\n").encode()
    result = protect_bytes(protector, raw)
    link_id, secret = link_of(result.outgoing[0].content)
    manifest = vault.read_manifest(link_id, secret)
    assert sorted(f.declared_type for f in manifest.files) == [
        "message/delivery-status", "message/rfc822-headers", "text/plain"]
    contents = [b"".join(vault.read_file(link_id, secret, f.object_id)) for f in manifest.files]
    assert any(b"Final-Recipient" in c for c in contents)
    assert any(b"sentinelrh" in c for c in contents) and b"sans type" in b"".join(contents)
    assert all(f.size > 0 for f in manifest.files)
    assert manifest.text == "Le corps."


def test_a_file_name_in_an_unquoted_encoded_word_or_a_windows_path_is_kept(setup) -> None:
    _, vault, protector = setup
    raw = (f"From: {ADDRESS}\r\nTo: patient@gmail.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
           "--m\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n"
           "--m\r\nContent-Type: application/pdf\r\n"
           "Content-Disposition: attachment; filename==?utf-8?B?VGhpcyBpcyBhIHRlc3QucGRm?=\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n"
           + base64.b64encode(PDF).decode() + "\r\n"
           "--m\r\nContent-Type: image/png\r\n"
           'Content-Disposition: attachment; filename="C:\\TEMP\\photo.png"\r\n'
           "Content-Transfer-Encoding: base64\r\n\r\n"
           + base64.b64encode(PNG).decode() + "\r\n--m--\r\n").encode()
    result = protect_bytes(protector, raw)
    link_id, secret = link_of(result.outgoing[0].content)
    names = sorted(f.name for f in vault.read_manifest(link_id, secret).files)
    assert names == ["This is a test.pdf", "photo.png"]


def test_a_body_too_long_to_read_as_text_is_sealed_as_a_file_not_dropped(
        setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.inspect import mime
    monkeypatch.setattr(mime, "MAX_TEXT", 1000)
    _, vault, protector = setup
    msg = EmailMessage()
    msg["From"] = ADDRESS
    msg["To"] = "patient@gmail.com"
    msg["Subject"] = "Compte rendu"
    msg.set_content("Compte rendu. " * 500)
    result = protect(protector, msg)
    link_id, secret = link_of(result.outgoing[0].content)
    manifest = vault.read_manifest(link_id, secret)
    bodies = [f for f in manifest.files if f.name == "message.txt"]
    assert len(bodies) == 1
    data = b"".join(vault.read_file(link_id, secret, bodies[0].object_id))
    assert data.count(b"Compte rendu.") == 500


def test_the_notice_keeps_reply_to_so_the_patients_answer_reaches_the_practice(setup) -> None:
    _, _, protector = setup
    msg = original()
    msg["Reply-To"] = "Secretariat du cabinet <secretariat@cabinet-martin.fr>"
    notice = protect(protector, msg).outgoing[0].content
    parsed = email.message_from_bytes(notice, policy=email.policy.default)
    assert parsed["Reply-To"] == "Secretariat du cabinet <secretariat@cabinet-martin.fr>"
    assert len(parsed.get_all("Reply-To")) == 1
