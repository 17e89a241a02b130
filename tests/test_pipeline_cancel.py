"""A submission cancelled while its copies are being written to the spool: what gets
queued is delivered, and its vault link is kept (a notice never points at nothing)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings
from gateway.pipeline import Pipeline, default_steps
from gateway.policy import Policy, load_policy
from gateway.preflight import template_dirs
from gateway.spool.store import Spool
from gateway.transform import Protector
from gateway.types import Submission
from gateway.vault import Vault
from tests.support import ADDRESS, make_gateway, submission_of


@dataclass
class Parts:
    """The pipeline of a `pli init` folder with its default policy, built in the test."""

    settings: Settings
    policy: Policy
    vault: Vault
    spool: Spool
    protector: Protector
    queued: list[str]

    def pipeline(self) -> Pipeline:
        return Pipeline(default_steps(lambda: self.policy, self.protector, self.spool,
                                      on_queued=lambda queue_id, _s: self.queued.append(queue_id)))

    def submission(self) -> Submission:
        return submission_of(self.spool, CONTENT, ADDRESS, ("patient@gmail.com",))


def parts(tmp_path: Path) -> Parts:
    settings = make_gateway(tmp_path / "pli", policy=None).settings()
    policy = load_policy(settings.policy)  # type: ignore[arg-type]
    vault = Vault(settings.vault_dir)
    spool = Spool(settings.spool_dir)
    spool.create()
    protector = Protector(vault, settings, template_dirs(settings),
                          tag_names=lambda: policy.tag_names)
    return Parts(settings, policy, vault, spool, protector, [])


# A protected message: the patient gets a notice, the sender a receipt with the code.
CONTENT = f"From: {ADDRESS}\r\nTo: patient@gmail.com\r\nSubject: Bilan\r\n\r\nBonjour\r\n".encode()


def test_a_cancelled_submission_keeps_the_link_of_the_notice_it_queued(tmp_path: Path) -> None:
    p = parts(tmp_path)
    vault, spool, queued = p.vault, p.spool, p.queued
    slow_enqueue = spool.enqueue

    def enqueue(message, body, source=None):  # type: ignore[no-untyped-def]
        time.sleep(0.3)  # a slow disk: the session is cancelled meanwhile
        slow_enqueue(message, body, source)
    spool.enqueue = enqueue  # type: ignore[method-assign]
    pipeline = p.pipeline()
    submission = p.submission()

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
    assert not submission.path.exists()  # the received file goes once it is not needed


def test_a_submission_cancelled_while_sealing_leaves_no_link_behind(tmp_path: Path) -> None:
    """The session goes away while the vault thread seals the message: nothing is queued,
    so the link that thread makes is discarded once it exists, not kept until expiry."""
    p = parts(tmp_path)
    vault, spool, queued, protector = p.vault, p.spool, p.queued, p.protector
    slow_protect = protector.protect
    sealing = []

    def protect(*args, **kwargs):  # type: ignore[no-untyped-def]
        sealing.append(True)
        time.sleep(0.3)  # a slow disk: the session is cancelled meanwhile
        return slow_protect(*args, **kwargs)
    protector.protect = protect  # type: ignore[method-assign]
    pipeline = p.pipeline()
    submission = p.submission()
    seen_links: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(pipeline.process(submission))
        while not sealing:
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        for _ in range(100):  # the sealing thread finishes, then its link goes
            seen_links.append(len(vault.links()))
            if seen_links[-1] == 0 and len(seen_links) > 10:
                break
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert not queued and not spool.ids()
    assert max(seen_links) <= 1 and seen_links[-1] == 0, seen_links
    assert not any((Path(p.settings.vault_dir) / "objects").iterdir())  # its files are gone too
    assert not submission.path.exists()
