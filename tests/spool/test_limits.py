"""An account's sending limits, counted without a provider: the pace, the rolling day,
the pauses a provider asks for."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config import Upstream
from gateway.spool.limits import BUCKET, DAY, WINDOW_MARGIN, AccountLimits, read, write

T = 1_750_000_200.0  # a bucket boundary: T % 600 == 0


def test_transactions_start_60_over_n_seconds_apart_whoever_starts_them() -> None:
    limits = AccountLimits(per_minute=30)
    turns = [limits.take_turn(T) for _ in range(4)]  # three senders asking at once, then one
    assert turns == [T, T + 2, T + 4, T + 6]
    assert limits.take_turn(T + 60) == T + 60  # a pause in the mail: no debt carried over
    limits.started(T + 60, T + 60.3)  # woken late: the next turn keeps the gap from there
    assert limits.take_turn(T + 61) == T + 62.3


def test_never_more_than_n_start_within_a_minute_however_late_some_were_woken() -> None:
    limits = AccountLimits(per_minute=3)  # one every 20 s
    turns = [limits.take_turn(T) for _ in range(3)]  # three senders at once
    assert turns == [T, T + 20, T + 40]
    limits.started(T, T + 5)  # the first was woken 5 s late, the others on time
    limits.started(T + 20, T + 20)
    limits.started(T + 40, T + 40)
    # 20 s after the third would be T + 60, only 55 s after the first really started:
    # the fourth waits until that one is a minute (and a margin) old.
    assert limits.take_turn(T) == T + 5 + 60 + WINDOW_MARGIN
    assert AccountLimits().take_turn(T) == T  # no limit: no wait


def test_the_day_counts_what_was_accepted_over_a_rolling_24_hours() -> None:
    limits = AccountLimits(recipients_per_day=10)
    granted = limits.reserve(T, 8)
    assert granted == 8
    assert limits.reserve(T + 1, 5) == 2  # the 8 under way count already
    limits.count(T + 5, 8, used=6)  # two of the eight were refused: they are not counted
    limits.count(T + 6, 2, used=2)
    assert limits.used(T + 10) == (8, 2)
    assert limits.reserve(T + 10, 3) == 2
    limits.count(T + 20, 2, used=2)
    assert limits.reserve(T + 30, 1) == 0
    # Room again once the bucket of those recipients is wholly 24 hours old, not before.
    assert limits.room_at(T + 30) == T + BUCKET + DAY
    assert limits.reserve(T + DAY + 1, 1) == 0
    assert limits.reserve(T + BUCKET + DAY, 3) == 3


def test_a_message_limit_counts_transactions() -> None:
    limits = AccountLimits(messages_per_day=2)
    for n in range(2):
        assert limits.reserve(T + n, 50) == 50
        limits.count(T + n, 50, used=50)
    assert limits.reserve(T + 2, 1) == 0
    assert limits.room_at(T + 2) == T + BUCKET + DAY


def test_a_provider_saying_slow_down_pauses_the_account_longer_each_time_in_a_row() -> None:
    limits = AccountLimits()
    assert limits.slow_down(T, 300, 4000, "slow") == T + 30
    assert limits.held_until(T + 29) == T + 30 and limits.held_until(T + 30) == 0.0
    assert limits.slow_down(T + 30, 300, 4000, "slow") == T + 90
    limits.went_well()
    assert limits.slow_down(T + 100, 300, 4000, "slow") == T + 130
    assert limits.block(T + 200, "quota") == T + 200 + DAY
    assert limits.next_turn(T + 300) == T + 200 + DAY


def test_the_counts_survive_in_their_file_and_a_bad_file_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "sending-limits.json"
    limits = AccountLimits.of(Upstream(host="smtp.example.net", max_recipients_per_day=10,
                                       max_messages_per_minute=30))
    limits.reserve(T, 4)
    limits.count(T, 4, used=4)
    limits.take_turn(T)
    write(path, json.dumps({"version": 1, "accounts": {"default": limits.to_json()}}).encode())
    again = AccountLimits(recipients_per_day=10, per_minute=30)
    again.restore(read(path)["default"])
    assert again.used(T + 60) == (4, 1) and again.next_turn(T) == T + 2
    assert [p.name for p in tmp_path.iterdir()] == ["sending-limits.json"]
    path.write_text("{ not json")
    assert read(path) == {}
