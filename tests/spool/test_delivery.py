"""The delivery worker against a scriptable provider over loopback: temporary failures,
outages, per-recipient outcomes and connection reuse."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.spool.store import QueuedMessage, Recipient, Spool, new_queue_id
from tests.spool.helpers import (
    OTHER_PATIENT,
    PATIENT,
    message,
    named,
    null_sender,
    queued,
    spool_of,
    stays,
    submit,
    wait_deferred,
    wait_queue_empty,
)
from tests.support import (
    ADDRESS,
    HOST,
    OTHER_ADDRESS,
    Gateway,
    LoopThread,
    Provider,
    RunningApp,
    SinkHandler,
    make_gateway,
    wait_until,
)

Events = list[dict[str, Any]]


@pytest.mark.parametrize("where, reply, times", [
    ("mail", "451 4.3.2 Try again later", 2),
    ("mail", "421 4.3.2 Service shutting down", 1),
    ("rcpt", "451 4.7.1 Greylisted, come back in a moment", 1),
    ("data", "451 4.3.0 Queue file write error", 1),
    ("data", "421 4.4.2 Closing connection", 1),
])
def test_a_temporary_refusal_is_retried_and_the_message_delivered_once(
        gw: Gateway, provider: Provider, pli: RunningApp, events: Events,
        where: str, reply: str, times: int) -> None:
    handler = provider.handler
    if where == "mail":
        handler.mail_replies.extend([reply] * times)
    elif where == "data":
        handler.data_replies.extend([reply] * times)
    else:
        handler.rcpt_replies[PATIENT] = reply
    queue_id = submit(gw)
    meta = wait_deferred(gw, queue_id)
    assert meta.pending[0].reply.startswith(reply[:3])
    if where == "rcpt":
        handler.rcpt_replies.clear()
    wait_until(lambda: provider.received, timeout=10)
    wait_queue_empty(gw)
    stays(lambda: len(provider.received) == 1, 0.8)
    assert provider.received[0].rcpt_tos == [PATIENT]
    deferred = named(events, "delivery.deferred", queue_id=queue_id)
    assert len(deferred) >= times
    assert str(deferred[0]["reply"]).startswith(reply[:3])
    assert len(named(events, "delivery.sent", queue_id=queue_id)) == 1


def test_a_provider_that_is_down_gets_the_message_once_it_is_back(
        loop: LoopThread, gw: Gateway, pli: RunningApp, events: Events) -> None:
    started = time.monotonic()
    queue_id = submit(gw)  # nothing listens on the provider's port yet
    assert time.monotonic() - started < 5  # the client got its 250 without waiting
    meta = wait_deferred(gw, queue_id)
    assert "Cannot reach the provider" in meta.last_error
    assert meta.pending[0].reply == meta.last_error
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    try:
        got = wait_until(lambda: provider.received, timeout=10)
        wait_queue_empty(gw)
        stays(lambda: len(provider.received) == 1, 0.8)
        assert got[0].mail_from == ADDRESS and got[0].rcpt_tos == [PATIENT]
        assert named(events, "delivery.deferred", queue_id=queue_id)
    finally:
        provider.stop()


def test_a_recipient_refused_for_good_is_not_tried_again_and_the_other_is_sent_once(
        gw: Gateway, provider: Provider, pli: RunningApp, events: Events) -> None:
    provider.handler.rcpt_replies[OTHER_PATIENT] = "550 5.1.1 No such mailbox here"
    queue_id = submit(gw, (PATIENT, OTHER_PATIENT))
    wait_until(lambda: len(provider.received) == 2, timeout=10)  # the message, then the DSN
    wait_queue_empty(gw)
    time.sleep(2.0)  # retries would come after 0.3, 0.9 and 1.9 seconds
    to_patients = [r for r in provider.received if r.mail_from == ADDRESS]
    assert [r.rcpt_tos for r in to_patients] == [[PATIENT]]
    dsns = [r for r in provider.received if null_sender(r.mail_from)]
    assert [r.rcpt_tos for r in dsns] == [[ADDRESS]]
    assert len(named(events, "delivery.bounced", queue_id=queue_id)) == 1
    assert named(events, "delivery.deferred", queue_id=queue_id) == []


def test_a_partly_deferred_message_is_not_sent_again_to_whom_already_has_it(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    provider.handler.rcpt_replies[OTHER_PATIENT] = "452 4.2.2 Mailbox full"
    queue_id = submit(gw, (PATIENT, OTHER_PATIENT))
    wait_until(lambda: provider.received, timeout=10)
    meta = wait_deferred(gw, queue_id)
    states = {r.address: r.state for r in meta.recipients}
    assert states == {PATIENT: "sent", OTHER_PATIENT: "pending"}
    provider.handler.rcpt_replies.clear()
    wait_queue_empty(gw)
    stays(lambda: len(provider.received) == 2, 0.8)
    assert [r.rcpt_tos for r in provider.received] == [[PATIENT], [OTHER_PATIENT]]


def _enqueue_for(spool: Spool, sender: str, n: int) -> None:
    """Message n from ``sender`` to patient n, put in the spool as the intake would."""
    data = message(sender=sender, to=f"patient{n}@example.org", body=f"message {n}")
    spool.enqueue(QueuedMessage(id=new_queue_id(), mail_from=sender,
                                recipients=[Recipient(f"patient{n}@example.org")],
                                created=time.time(), size=len(data), route_sender=sender),
                  data)


def test_messages_queued_together_share_connections_to_the_provider(
        tmp_path: Path, loop: LoopThread) -> None:
    gw = make_gateway(tmp_path / "pli", delivery="concurrency = 2\n")
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    spool = spool_of(gw)
    spool.create()
    for n in range(8):  # as after an outage: all due at start
        _enqueue_for(spool, ADDRESS, n)
    app = RunningApp(loop, gw).start()
    try:
        wait_until(lambda: len(provider.received) == 8, timeout=15)
        wait_queue_empty(gw)
    finally:
        app.stop()
        provider.stop()
    assert sorted(r.rcpt_tos[0] for r in provider.received) == \
        sorted(f"patient{n}@example.org" for n in range(8))
    assert 1 <= provider.handler.sessions <= 2


@dataclass
class HeldSink(SinkHandler):
    """A provider that keeps each message's final dot unanswered until released."""

    released: bool = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        while not self.released:
            await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


def test_each_upstream_account_has_its_own_connections(
        tmp_path: Path, loop: LoopThread) -> None:
    """Providers limit connections per account: one account's slow delivery neither takes
    a colleague's account's connection nor gets more than its own share."""
    gw = make_gateway(tmp_path / "pli", delivery="concurrency = 1\n")
    slow = Provider(loop, None, offer_starttls=False)
    slow.handler = held = HeldSink()
    config = gw.config.read_text()
    first = '[[upstream]]\nname = "default"'
    assert first in config
    gw.config.write_text(config.replace(first, (
        f'[[upstream]]\nname = "martin"\nsenders = ["{ADDRESS}"]\nhost = "{HOST}"\n'
        f'port = {slow.port}\nsecurity = "none"\n\n{first}'), 1))
    other = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    slow.start()
    spool = spool_of(gw)
    spool.create()
    for n, sender in enumerate((ADDRESS, ADDRESS, OTHER_ADDRESS)):
        _enqueue_for(spool, sender, n)
    app = RunningApp(loop, gw).start()
    try:
        # Dr Martin's first message is held at the provider; Dr Durand's goes meanwhile.
        wait_until(lambda: other.received, timeout=10)
        stays(lambda: held.sessions == 1 and not held.received, 0.5)
        held.released = True
        wait_until(lambda: len(held.received) == 2, timeout=10)
        wait_queue_empty(gw)
    finally:
        held.released = True
        app.stop()
        slow.stop()
        other.stop()
    assert [r.mail_from for r in other.received] == [OTHER_ADDRESS]
    assert {r.mail_from for r in held.received} == {ADDRESS}
    assert held.sessions == 1  # the second message waited for the account's one connection


def test_mail_no_upstream_account_covers_waits_with_a_reason(
        tmp_path: Path, loop: LoopThread) -> None:
    gw = make_gateway(tmp_path / "pli")
    config = gw.config.read_text()
    assert 'senders = ["*"]' in config
    gw.config.write_text(config.replace('senders = ["*"]', 'senders = ["@ailleurs.fr"]', 1))
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    app = RunningApp(loop, gw).start()
    try:
        meta = wait_deferred(gw, submit(gw))
        stays(lambda: not provider.received, 0.3)
    finally:
        app.stop()
        provider.stop()
    assert meta.last_error.startswith("451 4.3.5 No upstream account")
    assert ADDRESS in meta.last_error and meta.pending


def test_deferred_messages_are_retried_when_the_loop_checks_threads(
        tmp_path: Path, loop: LoopThread) -> None:
    """asyncio's debug mode refuses loop calls from other threads: the scheduler must hand
    due messages to the senders from the loop itself, or deferred mail is never retried."""
    loop.loop.set_debug(True)
    loop.loop.slow_callback_duration = 10.0
    gw = make_gateway(tmp_path / "pli")
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    provider.handler.mail_replies.extend(["451 4.3.2 Try again later"] * 3)
    app = RunningApp(loop, gw).start()
    try:
        queue_id = submit(gw)
        wait_deferred(gw, queue_id)
        wait_until(lambda: provider.received, timeout=10)
        wait_queue_empty(gw)
    finally:
        app.stop()
        provider.stop()
    assert queued(gw) == []


@pytest.mark.parametrize("reply, first_delay", [
    ("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", 30.0),  # Microsoft 365
    ("451 4.3.0 Temporary server error", 300.0),
])
def test_a_provider_busy_with_the_accounts_other_connections_is_tried_again_sooner(
        tmp_path: Path, loop: LoopThread, reply: str, first_delay: float) -> None:
    gw = make_gateway(tmp_path / "pli")
    config = gw.config.read_text()
    assert "retry_min = 0.3\nretry_max = 1.0\n" in config
    gw.config.write_text(config.replace("retry_min = 0.3\nretry_max = 1.0\n",
                                        "retry_min = 300\nretry_max = 4000\n"))  # shipped
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    provider.handler.mail_replies.append(reply)
    app = RunningApp(loop, gw).start()
    try:
        before = time.time()
        queue_id = submit(gw)
        meta = wait_deferred(gw, queue_id)
        after = time.time()
    finally:
        app.stop()
        provider.stop()
    assert before + first_delay <= meta.next_attempt <= after + first_delay
    assert meta.pending[0].reply.startswith(reply[:9])


@dataclass
class SlowSink(SinkHandler):
    """A provider that takes a moment over each message, so connections overlap."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.1)
        return await super().handle_DATA(server, session, envelope)


THIRD_ADDRESS = "dr.petit@cabinet-martin.fr"  # goes out with the default account


def _three_accounts(gw: Gateway) -> None:
    """Dr Martin and Dr Durand get their own account at the same provider; anyone else
    keeps the default one."""
    config = gw.config.read_text()
    first = '[[upstream]]\nname = "default"'
    assert first in config
    own = "".join(
        f'[[upstream]]\nname = "{name}"\nsenders = ["{address}"]\nhost = "{HOST}"\n'
        f'port = {gw.provider_port}\nsecurity = "none"\n\n'
        for name, address in (("martin", ADDRESS), ("durand", OTHER_ADDRESS)))
    gw.config.write_text(config.replace(first, own + first, 1))


def test_all_accounts_together_open_no_more_than_max_connections(
        tmp_path: Path, loop: LoopThread) -> None:
    """Three accounts of 3 connections each would open 9 at once; the practice-wide
    bound keeps it to 2, and every message still goes, once."""
    gw = make_gateway(tmp_path / "pli", delivery="concurrency = 3\nmax_connections = 2\n")
    _three_accounts(gw)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False)
    provider.handler = SlowSink()
    provider.start()
    spool = spool_of(gw)
    spool.create()
    senders = (ADDRESS, OTHER_ADDRESS, THIRD_ADDRESS)
    for n in range(12):
        _enqueue_for(spool, senders[n % 3], n)
    app = RunningApp(loop, gw).start()
    try:
        wait_until(lambda: len(provider.received) == 12, timeout=20)
        wait_queue_empty(gw)
    finally:
        app.stop()
        provider.stop()
    assert sorted(r.rcpt_tos[0] for r in provider.received) == \
        sorted(f"patient{n}@example.org" for n in range(12))
    assert {r.mail_from for r in provider.received} == set(senders)
    assert provider.handler.most_open == 2


def test_a_connection_kept_idle_gives_way_to_another_accounts_mail(
        tmp_path: Path, loop: LoopThread) -> None:
    """With every slot taken by a connection kept open for reuse, a colleague's message
    does not wait for it to time out (30 s here): the idle one is closed to make room."""
    gw = make_gateway(tmp_path / "pli", delivery="max_connections = 1\n")
    config = gw.config.read_text()
    assert "\nidle_close = 0.5\n" in config
    gw.config.write_text(config.replace("\nidle_close = 0.5\n", "\nidle_close = 30\n"))
    _three_accounts(gw)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    spool = spool_of(gw)
    spool.create()
    app = RunningApp(loop, gw).start()
    try:
        _enqueue_for(spool, ADDRESS, 0)
        wait_until(lambda: len(provider.received) == 1, timeout=10)
        stays(lambda: provider.handler.open_now == 1, 0.3)  # kept open for reuse
        _enqueue_for(spool, OTHER_ADDRESS, 1)
        wait_until(lambda: len(provider.received) == 2, timeout=5)
        wait_queue_empty(gw)
    finally:
        app.stop()
        provider.stop()
    assert [r.mail_from for r in provider.received] == [ADDRESS, OTHER_ADDRESS]
    assert provider.handler.most_open == 1
    assert provider.handler.sessions == 2


@dataclass
class SlowToAnswerSink(SinkHandler):
    """A provider that takes the message at the final dot, then takes its time to say so
    (a scan of a large message): it has the message whether or not Pli waits."""

    delay: float = 2.5

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(self.delay)
        return reply


def test_a_provider_slow_to_answer_the_final_dot_is_not_sent_the_message_twice(
        tmp_path: Path, loop: LoopThread, events: Events) -> None:
    """Every other command gets command_timeout (1 s here); the end of DATA gets its own
    wait, 10 minutes by default (RFC 5321 §4.5.3.2.6)."""
    gw = make_gateway(tmp_path / "pli")
    config = gw.config.read_text()
    assert "\ncommand_timeout = 10\n" in config
    gw.config.write_text(config.replace("\ncommand_timeout = 10\n", "\ncommand_timeout = 1\n"))
    assert gw.settings().delivery.data_timeout == 600
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False)
    provider.handler = SlowToAnswerSink()
    provider.start()
    app = RunningApp(loop, gw).start()
    try:
        queue_id = submit(gw)
        wait_queue_empty(gw, timeout=15)
        stays(lambda: len(provider.received) == 1, 1.5)  # retries would come within 1 s
    finally:
        app.stop()
        provider.stop()
    assert named(events, "delivery.deferred", queue_id=queue_id) == []
    assert len(named(events, "delivery.sent", queue_id=queue_id)) == 1
