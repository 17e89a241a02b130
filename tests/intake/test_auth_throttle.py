"""Repeated login failures from one address are slowed down, then refused for a while."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.intake.throttle import AuthThrottle
from tests.support import HOST, PASSWORD, USER, LoopThread, RunningApp, make_gateway


def test_throttle_delays_then_locks_then_forgets_after_the_lockout() -> None:
    now = [1000.0]
    throttle = AuthThrottle(delay_after=2, max_failures=4, window=60, lockout=300,
                            clock=lambda: now[0])
    assert [throttle.failed("192.0.2.7") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert not throttle.locked("192.0.2.7")
    throttle.failed("192.0.2.7")
    assert throttle.locked("192.0.2.7")
    assert not throttle.locked("192.0.2.8")  # other addresses are not affected
    now[0] += 301
    assert not throttle.locked("192.0.2.7")


def test_a_success_clears_the_failures_of_that_address() -> None:
    throttle = AuthThrottle(delay_after=0, max_failures=3, window=60, lockout=300)
    throttle.failed("192.0.2.7")
    throttle.failed("192.0.2.7")
    throttle.succeeded("192.0.2.7")
    assert throttle.failed("192.0.2.7") == 1.0


def test_the_server_answers_454_once_an_address_has_failed_too_often(tmp_path: Path) -> None:
    loop = LoopThread()
    gw = make_gateway(tmp_path / "pli", extra="\n[auth]\ndelay_after = 5\nmax_failures = 3\n"
                      "window = 60\nlockout = 60\n")
    app = RunningApp(loop, gw).start()
    try:
        with capture_logs() as logs:
            with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
                client.starttls(context=gw.client_context())
                client.ehlo()
                codes = []
                for _ in range(3):
                    code, _ = client.docmd("AUTH", "PLAIN " + _plain(USER, "wrong password"))
                    codes.append(code)
                code, text = client.docmd("AUTH", "PLAIN " + _plain(USER, PASSWORD))
        assert codes == [535, 535, 535]
        assert code == 454 and text.startswith(b"4.7.0")  # even the right password, for now
        failed = [e for e in logs if e["event"] == "session.auth_failed"]
        assert len(failed) == 3 and all(e["client"] == "127.0.0.1" for e in failed)
        assert all(PASSWORD not in str(e) and "wrong password" not in str(e) for e in logs)
        assert all("user" not in e for e in failed)  # a mistyped password could be there
    finally:
        app.stop()
        loop.close()


def _plain(user: str, password: str) -> str:
    import base64
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.mark.parametrize("blob", ["!!notbase64", "dXNlcm9ubHk="])
def test_malformed_auth_data_gets_a_501(gw, pli, blob: str) -> None:  # type: ignore[no-untyped-def]
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        client.starttls(context=gw.client_context())
        client.ehlo()
        code, text = client.docmd("AUTH", f"PLAIN {blob}")
    assert code == 501 and text.startswith(b"5.5.2")


def test_the_login_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = AuthThrottle(delay_after=0, max_failures=3, window=60, lockout=300,
                            clock=lambda: 0.0)
    for i in range(20_000):
        throttle.failed(f"198.51.{i // 256}.{i % 256}")
    assert len(throttle._failures) <= 10_000


def _logins_at_once(tmp_path: Path, password: str, count: int) -> list[int]:
    """``count`` AUTH PLAIN for USER on as many connections at once, from one address,
    to a gateway that locks an address out after 3 failures; their reply codes."""
    import concurrent.futures

    loop = LoopThread()
    gw = make_gateway(tmp_path / "pli", extra="\n[auth]\ndelay_after = 50\nmax_failures = 3\n"
                      "window = 60\nlockout = 60\n")
    app = RunningApp(loop, gw).start()

    def attempt(_: int) -> int:
        with smtplib.SMTP(HOST, gw.submission_port, timeout=20) as client:
            client.starttls(context=gw.client_context())
            client.ehlo()
            return client.docmd("AUTH", "PLAIN " + _plain(USER, password))[0]
    try:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return list(pool.map(attempt, range(count)))
    finally:
        app.stop()
        loop.close()


def test_logins_sent_in_parallel_cannot_slip_past_the_lockout(tmp_path: Path) -> None:
    """Twelve wrong logins on twelve connections at once: no more than the limit of them
    get a password check; the others get 454."""
    codes = _logins_at_once(tmp_path, "wrong password", 12)
    assert codes.count(535) <= 3 and codes.count(454) >= 9, codes


def test_right_logins_sent_in_parallel_all_get_in(tmp_path: Path) -> None:
    """Twenty right logins at once from one address (a practice behind one NAT address, a
    client opening several connections) wait their turn; none of them gets 454."""
    codes = _logins_at_once(tmp_path, PASSWORD, 20)
    assert codes == [235] * 20, codes


def test_checks_in_parallel_never_outnumber_the_failures_left() -> None:
    import asyncio

    async def scenario() -> list[str]:
        throttle = AuthThrottle(delay_after=0, max_failures=3, window=60, lockout=300)
        throttle.failed("192.0.2.7")  # 2 failures left
        order: list[str] = []

        async def check(name: str, right: bool) -> None:
            if not await throttle.admit("192.0.2.7"):
                order.append(f"{name} locked")
                return
            order.append(f"{name} checking")
            await asyncio.sleep(0.01)
            if right:
                throttle.succeeded("192.0.2.7")
            else:
                throttle.failed("192.0.2.7")
            throttle.done("192.0.2.7")
            order.append(f"{name} {'in' if right else 'refused'}")

        await asyncio.gather(check("a", False), check("b", False), check("c", True))
        return order

    order = asyncio.run(scenario())
    # a and b are checked side by side; c waits, then finds the address locked.
    assert order[:2] == ["a checking", "b checking"]
    assert order[-1] == "c locked"
    assert order.count("c checking") == 0


def test_the_server_waits_before_answering_each_wrong_password_past_delay_after(
        tmp_path: Path) -> None:
    """With ``delay_after = 1``: the first wrong password is answered at once, the second
    after a second, the third after two."""
    import time

    loop = LoopThread()
    gw = make_gateway(tmp_path / "pli", extra="\n[auth]\ndelay_after = 1\nmax_failures = 5\n"
                      "window = 60\nlockout = 60\n")
    app = RunningApp(loop, gw).start()
    try:
        with smtplib.SMTP(HOST, gw.submission_port, timeout=20) as client:
            client.starttls(context=gw.client_context())
            client.ehlo()
            waited = []
            for _ in range(3):
                started = time.monotonic()
                code, _ = client.docmd("AUTH", "PLAIN " + _plain(USER, "wrong password"))
                waited.append(time.monotonic() - started)
                assert code == 535
    finally:
        app.stop()
        loop.close()
    assert waited[0] < 0.9, waited
    assert 1.0 <= waited[1] < 1.9, waited
    assert 2.0 <= waited[2] < 2.9, waited
