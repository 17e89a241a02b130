"""A submission cancelled while its copies are being written to the spool: what gets
queued is delivered, and its vault link is kept (a notice never points at nothing)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.checks import template_dirs
from gateway.pipeline import Pipeline, default_steps
from gateway.policy import load_policy
from gateway.spool.store import Spool
from gateway.transform import Protector
from gateway.types import Envelope, Submission
from gateway.vault import Vault
from tests.support import ADDRESS, make_gateway


def test_a_cancelled_submission_keeps_the_link_of_the_notice_it_queued(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli", policy=None)
    settings = gw.settings()
    policy = load_policy(settings.policy)  # type: ignore[arg-type]
    vault = Vault(settings.vault_dir)
    spool = Spool(settings.spool_dir)
    spool.create()
    slow_enqueue = spool.enqueue

    def enqueue(message, content):  # type: ignore[no-untyped-def]
        time.sleep(0.3)  # a slow disk: the session is cancelled meanwhile
        slow_enqueue(message, content)
    spool.enqueue = enqueue  # type: ignore[method-assign]
    queued: list[str] = []
    protector = Protector(vault, settings, template_dirs(settings),
                          tag_names=lambda: policy.tag_names)
    pipeline = Pipeline(default_steps(lambda: policy, protector), spool,
                        on_queued=queued.append)
    content = (f"From: {ADDRESS}\r\nTo: patient@gmail.com\r\nSubject: Bilan\r\n\r\n"
               "Bonjour\r\n").encode()
    submission = Submission(Envelope(ADDRESS, ("patient@gmail.com",)), content, "martin",
                            "127.0.0.1", frozenset({ADDRESS}))

    async def scenario() -> None:
        task = asyncio.create_task(pipeline.process(submission))
        while not vault.links():  # sealed: the notice is being written now
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        for _ in range(100):  # the writing thread finishes on its own
            if queued:
                break
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert len(spool.ids()) == 2 and sorted(queued) == sorted(spool.ids())  # notice, receipt
    assert len(vault.links()) == 1  # still there for the notice that will be delivered
