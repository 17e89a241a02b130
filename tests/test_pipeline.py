"""The message path as the server composes it: what is queued for each decision."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

from gateway.pipeline import Pipeline, default_steps
from gateway.policy import Policy
from gateway.preflight import template_dirs
from gateway.spool.store import Spool
from gateway.transform import Protector
from gateway.vault import Vault
from tests.support import ADDRESS, make_gateway, submission_of


def test_a_policy_without_a_rule_that_holds_protects_instead_of_dropping(
    tmp_path: Path,
) -> None:
    """The engine's fallback (no rule held) must still give each recipient a copy: a
    protect decision the pipeline cannot act on would leave nothing queued after 250."""
    gw = make_gateway(tmp_path / "pli", policy=None)
    settings = gw.settings()
    protector = Protector(Vault(settings.vault_dir), settings, template_dirs(settings),
                          tag_names=lambda: frozenset({"code"}))
    spool = Spool(settings.spool_dir)
    msg = EmailMessage()
    msg["From"] = ADDRESS
    msg["To"] = "patient@gmail.com"
    msg["Subject"] = "Résultats"
    msg.set_content("Le compte rendu.")
    content = msg.as_bytes().replace(b"\n", b"\r\n")
    submission = submission_of(spool, content, ADDRESS, ("patient@gmail.com",))
    empty = Policy(path=None, rules=(), lists={})
    pipeline = Pipeline(default_steps(lambda: empty, protector, spool))
    asyncio.run(pipeline.process(submission))
    copies = [spool.load(i) for i in spool.ids()]
    notices = [c for c in copies if c and [r.address for r in c.recipients] == ["patient@gmail.com"]]
    assert len(notices) == 1
    assert b"compte rendu" not in spool.content(notices[0].id)
    assert not submission.path.exists()
