"""The message path as the server composes it: what is queued for each decision."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

from gateway.preflight import template_dirs
from gateway.pipeline import ApplyPolicy, Job
from gateway.policy import Policy
from gateway.transform import Protector
from gateway.types import Envelope, Submission
from gateway.vault import Vault
from tests.support import ADDRESS, make_gateway


def test_a_policy_without_a_rule_that_holds_protects_instead_of_dropping(
    tmp_path: Path,
) -> None:
    """The engine's fallback (no rule held) must still give each recipient a copy: a
    protect decision the pipeline cannot act on would leave nothing queued after 250."""
    gw = make_gateway(tmp_path / "pli", policy=None)
    settings = gw.settings()
    protector = Protector(Vault(settings.vault_dir), settings, template_dirs(settings),
                          tag_names=lambda: frozenset({"code"}))
    msg = EmailMessage()
    msg["From"] = ADDRESS
    msg["To"] = "patient@gmail.com"
    msg["Subject"] = "Résultats"
    msg.set_content("Le compte rendu.")
    content = msg.as_bytes().replace(b"\n", b"\r\n")
    job = Job(Submission(Envelope(ADDRESS, ("patient@gmail.com",)), content, "martin",
                         "127.0.0.1", frozenset({ADDRESS})))
    empty = Policy(path=None, rules=(), lists={})
    asyncio.run(ApplyPolicy(lambda: empty, protector)(job))
    notices = [o for o in job.outgoing if o.recipients == ("patient@gmail.com",)]
    assert len(notices) == 1
    assert b"compte rendu" not in notices[0].content
