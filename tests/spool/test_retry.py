"""Retries like a real MTA: after ``retry_min``, then with doubling delays up to
``retry_max``, until the message's lifetime has passed (the README's "Retries like a real
MTA")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.spool.outcomes import is_busy_reply
from gateway.spool.retry import BUSY_RETRY, expired, next_delay
from tests.spool.helpers import named, submit, wait_deferred
from tests.support import LoopThread, Provider, RunningApp, make_gateway, wait_until

Events = list[dict[str, Any]]


def test_the_shipped_schedule_waits_5_minutes_then_doubles_up_to_about_an_hour() -> None:
    delays = [next_delay(n, 300, 4000) for n in range(1, 8)]
    assert delays == [300, 600, 1200, 2400, 4000, 4000, 4000]


def test_a_busy_account_is_retried_after_30_seconds_then_doubling_too() -> None:
    assert [next_delay(n, BUSY_RETRY, 4000) for n in range(1, 4)] == [30, 60, 120]


def test_the_delay_never_overflows_however_many_attempts() -> None:
    assert next_delay(10_000, 300, 4000) == 4000
    assert next_delay(0, 300, 4000) == 300  # before the first failure: the minimum


def test_a_message_expires_once_its_lifetime_has_passed_not_before() -> None:
    assert not expired(created=1000.0, now=1000.0 + 5 * 86400 - 1, lifetime=5 * 86400)
    assert expired(created=1000.0, now=1000.0 + 5 * 86400, lifetime=5 * 86400)


def test_only_a_432_or_a_4_3_2_counts_as_busy() -> None:
    assert is_busy_reply("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded")
    assert is_busy_reply("451 4.3.2 Try again later")
    assert not is_busy_reply("451 4.3.0 Temporary server error")
    assert not is_busy_reply("451 4.3.21 Something else")  # not 4.3.2
    assert not is_busy_reply("451 14.3.2 Something else")


def test_a_running_pli_doubles_its_delay_after_each_refusal(
        tmp_path: Path, loop: LoopThread, events: Events) -> None:
    """The provider refuses three times: Pli waits 0.3 s, then 0.6 s, then 1.2 s (the
    shipped schedule, scaled down), and the fourth attempt delivers the message."""
    gw = make_gateway(tmp_path / "pli")
    config = gw.config.read_text()
    assert "retry_max = 1.0\n" in config
    gw.config.write_text(config.replace("retry_max = 1.0\n", "retry_max = 10\n"))
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    provider.handler.mail_replies.extend(["451 4.3.0 Temporary server error"] * 3)
    app = RunningApp(loop, gw).start()
    try:
        queue_id = submit(gw)
        wait_deferred(gw, queue_id)
        wait_until(lambda: provider.received, timeout=15)
    finally:
        app.stop()
        provider.stop()
    deferred = named(events, "delivery.deferred", queue_id=queue_id)
    assert [(e["attempts"], e["retry_in"]) for e in deferred] == [(1, 0.3), (2, 0.6), (3, 1.2)]
    assert len(provider.received) == 1
