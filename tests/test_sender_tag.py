"""A `sender-tag` rule through a real `pli run`: a message without `[code:NNNN]` is refused
at the end of DATA with a sentence saying how to add it, and nothing of it is kept; with
the tag, the link requires that code and the tag leaves with no copy."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.vault import Vault
from tests.spool.helpers import PATIENT, message, queued, spool_of
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    RELAY_POLICY,
    USER,
    Gateway,
    PliProcess,
    make_gateway,
)

SENDER_TAG_POLICY = RELAY_POLICY.replace(
    'name = "relay-everything"\ndefault = true\naction = "pass"\n',
    'name = "patients"\ndefault = true\naction = "protect"\n'
    'protect = { access_code = "sender-tag" }\n')


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    assert SENDER_TAG_POLICY != RELAY_POLICY
    gateway = make_gateway(tmp_path / "pli", policy=SENDER_TAG_POLICY)
    pli = PliProcess(gateway, tmp_path / "pli.log").start()
    try:
        yield gateway
    finally:
        pli.kill()


def _send(gw: Gateway, subject: str) -> tuple[int, bytes]:
    data = message(to=PATIENT).replace(b"Subject: Rendez-vous", f"Subject: {subject}".encode())
    with smtplib.SMTP(HOST, gw.submission_port, timeout=20) as client:
        client.starttls(context=gw.client_context())
        client.login(USER, PASSWORD)
        client.mail(ADDRESS)
        client.rcpt(PATIENT)
        return client.data(data)


def test_a_message_without_the_tag_is_refused_saying_how_to_add_it(gw: Gateway) -> None:
    code, text = _send(gw, "Résultats")
    assert code == 550, text
    reply = text.decode()
    assert reply.startswith("5.7.1 ")
    assert "ajoutez-le a l'objet sous la forme [code:1234]" in reply  # French first (ASCII)
    assert "add it to the subject as [code:1234]" in reply
    assert reply.index("ajoutez") < reply.index("add it")
    assert queued(gw) == []
    assert Vault(gw.settings().vault_dir).links() == []


def test_a_message_with_the_tag_is_protected_by_that_code(gw: Gateway) -> None:
    code, text = _send(gw, "Résultats [code:4821]")
    assert code == 250, text
    copies = queued(gw)  # the patient's notice and the sender's receipt
    (notice,) = [c for c in copies if [r.address for r in c.recipients] == [PATIENT]]
    assert len(copies) == 2
    for copy in copies:
        content = spool_of(gw).content(copy.id)
        assert b"[code:" not in content and b"4821" not in content
    (link,) = Vault(gw.settings().vault_dir).links()
    assert link.has_code and link.recipients == (PATIENT,)
    vault = Vault(gw.settings().vault_dir)
    assert not vault.check_code(link.id, "1234").ok
    assert vault.check_code(link.id, "4821").ok
