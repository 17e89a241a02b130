"""An account's sending limits against a provider that enforces them over loopback: a
queue over the rate waits its turn, a message to many recipients goes as several
transactions, the day's count survives a restart, and a provider's rate or quota answer
slows the account down instead of costing a retry or a bounce."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from gateway.spool.limits import LIMITS_FILE
from gateway.spool.store import QueuedMessage, Recipient, Spool, new_queue_id
from tests.spool.helpers import (
    OTHER_PATIENT,
    PATIENT,
    message,
    named,
    queued,
    spool_of,
    stays,
    submit,
    wait_queue_empty,
)
from tests.support import (
    ADDRESS,
    Gateway,
    LoopThread,
    Provider,
    RunningApp,
    SinkHandler,
    make_gateway,
    wait_until,
)

Events = list[dict[str, Any]]


@dataclass
class LimitedSink(SinkHandler):
    """A provider that enforces what it tells its customers: a MAIL sooner than
    ``spacing`` after the last one, or a recipient past ``per_message``, is refused."""

    spacing: float = 0.0
    per_message: int | None = None
    refusals: list[str] = field(default_factory=list)
    mails: list[float] = field(default_factory=list)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        now = time.monotonic()
        if self.mails and now - self.mails[-1] < self.spacing:
            self.refusals.append("rate")
            return "450 4.7.0 Too many messages sent, slow down"
        self.mails.append(now)
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if self.per_message is not None and len(envelope.rcpt_tos) >= self.per_message:
            self.refusals.append("recipients")
            return "452 4.5.3 Too many recipients"
        return await super().handle_RCPT(server, session, envelope, address, options)


def with_limits(gw: Gateway, **limits: int) -> None:
    config = gw.config.read_text()
    anchor = "verify_certificate = true\n"
    assert config.count(anchor) == 1
    lines = "".join(f"{k} = {v}\n" for k, v in limits.items())
    gw.config.write_text(config.replace(anchor, anchor + lines))


def enqueue(spool: Spool, n: int, recipients: tuple[str, ...] | None = None) -> str:
    to = recipients or (f"patient{n}@example.org",)
    data = message(to=", ".join(to), body=f"message {n}")
    queue_id = new_queue_id()
    spool.enqueue(QueuedMessage(id=queue_id, mail_from=ADDRESS,
                                recipients=[Recipient(r) for r in to], created=time.time(),
                                size=len(data), route_sender=ADDRESS), data)
    return queue_id


def pli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "-c", str(gw.config)],
                          check=False, capture_output=True, text=True, timeout=30)


def start(loop: LoopThread, gw: Gateway, handler: SinkHandler) -> Provider:
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False)
    provider.handler = handler
    return provider.start()


def test_a_queue_over_the_rate_waits_its_turn_and_none_is_refused(
        tmp_path: Path, loop: LoopThread) -> None:
    gw = make_gateway(tmp_path / "pli")  # three connections for the account
    with_limits(gw, max_messages_per_minute=120)  # one every 0.5 s
    sink = LimitedSink(spacing=0.4)  # what reaches it: the loop's own jitter allowed for
    provider = start(loop, gw, sink)
    spool = spool_of(gw)
    spool.create()
    for n in range(6):  # as after an outage: all due at once
        enqueue(spool, n)
    app = RunningApp(loop, gw).start()
    try:
        wait_until(lambda: len(provider.received) == 6, timeout=15)
        wait_queue_empty(gw)
    finally:
        app.stop()
        provider.stop()
    assert sink.refusals == []
    gaps = [b - a for a, b in pairwise(sink.mails)]
    assert len(sink.mails) == 6 and min(gaps) >= 0.4, gaps
    assert sink.mails[-1] - sink.mails[0] >= 2.4  # five gaps of 0.5 s
    assert sorted(r.rcpt_tos[0] for r in provider.received) == \
        sorted(f"patient{n}@example.org" for n in range(6))


def test_a_message_to_more_recipients_than_allowed_goes_as_several_transactions(
        tmp_path: Path, loop: LoopThread) -> None:
    gw = make_gateway(tmp_path / "pli")
    with_limits(gw, max_recipients_per_message=2)
    sink = LimitedSink(per_message=2)
    provider = start(loop, gw, sink)
    recipients = tuple(f"patient{n}@example.org" for n in range(5))
    app = RunningApp(loop, gw).start()
    try:
        submit(gw, recipients)
        wait_until(lambda: len(provider.received) == 3, timeout=10)
        wait_queue_empty(gw)
        stays(lambda: len(provider.received) == 3, 0.5)
    finally:
        app.stop()
        provider.stop()
    assert sink.refusals == []
    assert [r.rcpt_tos for r in provider.received] == [
        list(recipients[0:2]), list(recipients[2:4]), list(recipients[4:])]
    assert all(r.content == provider.received[0].content for r in provider.received)


def test_the_days_count_survives_a_restart_and_the_rest_waits_for_room(
        tmp_path: Path, loop: LoopThread, events: Events) -> None:
    gw = make_gateway(tmp_path / "pli")
    with_limits(gw, max_recipients_per_day=3)
    provider = start(loop, gw, SinkHandler())
    app = RunningApp(loop, gw).start()
    try:
        submit(gw, ("first@example.org", "second@example.org"))
        wait_until(lambda: provider.received, timeout=10)
        wait_queue_empty(gw)
    finally:
        app.stop()
    saved = json.loads((gw.settings().data_dir / LIMITS_FILE).read_text())
    assert sum(b[0] for b in saved["accounts"]["default"]["buckets"].values()) == 2

    app = RunningApp(loop, gw).start()  # a new server: it reads the day's count back
    try:
        before = time.time()
        queue_id = submit(gw, (PATIENT, OTHER_PATIENT))
        wait_until(lambda: len(provider.received) == 2, timeout=10)
        meta = wait_until(lambda: (m := spool_of(gw).load(queue_id)) and m.waiting and m,
                          timeout=10)
        stays(lambda: len(provider.received) == 2, 1.0)  # retries would come within 1 s
    finally:
        app.stop()
        provider.stop()
    assert provider.received[1].rcpt_tos == [PATIENT]
    assert [r.address for r in meta.pending] == [OTHER_PATIENT]
    assert meta.attempts == 0  # waiting for room is not a failed attempt
    assert meta.next_attempt >= before + 86400
    assert meta.waiting == "account 'default' has reached its limit of 3 recipients a day"
    assert named(events, "delivery.waiting", queue_id=queue_id, recipients=1)
    assert named(events, "delivery.deferred", queue_id=queue_id) == []

    listed = pli(gw, "queue", "list").stdout
    until = time.strftime("%Y-%m-%d", time.localtime(meta.next_attempt))
    assert (f"    waiting: account 'default' has reached its limit of 3 recipients a day, "
            f"until {until}") in listed, listed


@pytest.mark.parametrize("reply", [
    "450 4.7.0 Too many messages sent, slow down",
    "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
])
def test_a_provider_saying_slow_down_pauses_the_whole_account(
        tmp_path: Path, loop: LoopThread, events: Events, reply: str) -> None:
    gw = make_gateway(tmp_path / "pli", delivery="concurrency = 1\n")
    config = gw.config.read_text()
    assert "retry_min = 0.3\nretry_max = 1.0\n" in config
    gw.config.write_text(config.replace("retry_min = 0.3\nretry_max = 1.0\n",
                                        "retry_min = 300\nretry_max = 4000\n"))  # shipped
    provider = start(loop, gw, SinkHandler(mail_replies=[reply]))
    spool = spool_of(gw)
    spool.create()
    first, second = enqueue(spool, 0), enqueue(spool, 1)
    app = RunningApp(loop, gw).start()
    try:
        before = time.time()
        waiting = wait_until(lambda: (m := spool.load(second)) and m.waiting and m, timeout=10)
        stays(lambda: provider.handler.mail_replies == [] and not provider.received, 1.0)
    finally:
        app.stop()
        provider.stop()
    tried = spool.load(first)
    assert tried is not None and tried.attempts == 1
    assert before + 30 - 1 <= tried.next_attempt <= before + 31  # 30 s, not retry_min
    assert waiting.attempts == 0 and abs(waiting.next_attempt - tried.next_attempt) < 1
    assert waiting.waiting.startswith("the provider asked account 'default' to slow down")
    assert named(events, "upstream.rate_limited", account="default", quota=False)


def test_a_spent_daily_quota_defers_to_the_next_day_instead_of_bouncing(
        tmp_path: Path, loop: LoopThread, events: Events) -> None:
    gw = make_gateway(tmp_path / "pli")
    quota = "550 5.4.5 Daily user sending quota exceeded"
    provider = start(loop, gw, SinkHandler(mail_replies=[quota] * 5))
    app = RunningApp(loop, gw).start()
    try:
        before = time.time()
        queue_id = submit(gw)
        meta = wait_until(lambda: (m := spool_of(gw).load(queue_id)) and m.attempts and m,
                          timeout=10)
        later = submit(gw, (OTHER_PATIENT,))  # the account's other mail waits too
        waiting = wait_until(lambda: (m := spool_of(gw).load(later)) and m.waiting and m,
                             timeout=10)
        stays(lambda: len(provider.handler.mail_replies) == 4, 1.0)  # nothing more tried
    finally:
        app.stop()
        provider.stop()
    assert [r.state for r in meta.recipients] == ["pending"]
    assert meta.recipients[0].reply.startswith("550 5.4.5")
    assert meta.next_attempt >= before + 86400
    assert waiting.next_attempt >= before + 86400 and waiting.attempts == 0
    assert "used its sending quota for the day (550 5.4.5)" in waiting.waiting
    assert named(events, "delivery.bounced") == [] and named(events, "dsn.queued") == []
    assert provider.received == [] and {m.id for m in queued(gw)} == {queue_id, later}
    listed = pli(gw, "queue", "list").stdout
    assert listed.count("used its sending quota for the day (550 5.4.5), until") == 2, listed


def test_queue_list_says_when_each_message_over_the_rate_gets_its_turn(
        tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    with_limits(gw, max_messages_per_minute=2)  # one every 30 s
    spool = spool_of(gw)
    spool.create()
    ids = [enqueue(spool, n) for n in range(3)]
    now = time.time()
    data_dir = gw.settings().data_dir
    (data_dir / LIMITS_FILE).write_text(json.dumps({"version": 1, "accounts": {
        "default": {"last_turn": now}}}))  # one just went
    lines = pli(gw, "queue", "list").stdout.splitlines()
    turns = [lines[i + 1] for i, line in enumerate(lines) if line.split()[0] in ids]
    expected = [time.strftime("%H:%M:%S", time.localtime(now + 30 * (n + 1)))
                for n in range(3)]
    for line, hour in zip(turns, expected, strict=True):
        assert line.startswith("    waiting its turn: account 'default' sends at most 2 "
                               "messages a minute; about "), line
        assert abs(time.mktime(time.strptime(line.rsplit("about ", 1)[1],
                                             "%Y-%m-%d %H:%M:%S")) -
                   time.mktime(time.strptime(time.strftime("%Y-%m-%d ") + hour,
                                             "%Y-%m-%d %H:%M:%S"))) <= 2, (line, hour)
