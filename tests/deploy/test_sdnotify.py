"""sd_notify over a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import sdnotify


class Listener:
    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock, self.address = sock, address

    def receive(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode("utf-8")

    def pending(self) -> list[str]:
        self.sock.settimeout(0)
        got = []
        try:
            while True:
                got.append(self.sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return got


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield Listener(sock, str(path))
    sock.close()


def test_ready_reaches_the_socket(systemd: Listener) -> None:
    assert sdnotify.ready() is True
    assert systemd.receive() == "READY=1"


def test_status_rides_along_on_one_line(systemd: Listener) -> None:
    sdnotify.ready("listening on\n587 and 465")
    assert systemd.receive() == "READY=1\nSTATUS=listening on 587 and 465"


def test_stopping_and_watchdog(systemd: Listener) -> None:
    sdnotify.stopping()
    sdnotify.watchdog()
    assert systemd.receive() == "STOPPING=1"
    assert systemd.receive() == "WATCHDOG=1"


def test_reload_sequence_sends_monotonic_time_then_ready(systemd: Listener) -> None:
    before = time.monotonic_ns() // 1000  # CLOCK_MONOTONIC on Linux, like systemd's
    sdnotify.reloading()
    after = time.monotonic_ns() // 1000
    sdnotify.ready()
    lines = systemd.receive().split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    assert systemd.receive() == "READY=1"


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pli-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        sock.settimeout(2)
        assert sock.recv(100) == b"READY=1"


def test_no_socket_means_nothing_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


def test_a_vanished_socket_does_not_raise(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.ready() is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    for bad in ("0", "", "soon", "-5"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None


def test_watchdog_loop_pings_only_while_healthy(systemd: Listener,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # 40 ms: a ping every 20 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    healthy = True

    def is_healthy() -> bool:
        return healthy

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        nonlocal healthy
        task = asyncio.create_task(sdnotify.watchdog_loop(is_healthy))
        await asyncio.sleep(0.2)
        first = systemd.pending()
        healthy = False
        await asyncio.sleep(0.03)  # a ping may already be on its way
        systemd.pending()
        await asyncio.sleep(0.2)
        silent = systemd.pending()
        healthy = True
        await asyncio.sleep(0.2)
        again = systemd.pending()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return first, silent, again

    first, silent, again = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert len(first) >= 3 and set(first) == {"WATCHDOG=1"}
    assert silent == []
    assert len(again) >= 3


def test_watchdog_loop_treats_an_exception_as_unhealthy(systemd: Listener) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    async def scenario() -> None:
        task = asyncio.create_task(sdnotify.watchdog_loop(broken, interval=0.01))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert systemd.pending() == []


def test_watchdog_loop_returns_when_not_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    asyncio.run(asyncio.wait_for(sdnotify.watchdog_loop(lambda: True), 2))


def test_watchdog_pings_resume_once_a_failing_health_check_passes_again(
        systemd: Listener) -> None:
    """A check that raises (of any kind) withholds the pings without ending the loop: once
    it passes again, the pings come back."""
    class CheckFailed(Exception):
        pass

    failing = True

    def check() -> bool:
        if failing:
            raise CheckFailed("the spool cannot be read")
        return True

    async def scenario() -> tuple[list[str], list[str], bool]:
        nonlocal failing
        task = asyncio.create_task(sdnotify.watchdog_loop(check, interval=0.01))
        await asyncio.sleep(0.15)
        withheld = systemd.pending()
        failing = False
        await asyncio.sleep(0.15)
        resumed = systemd.pending()
        still_running = not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return withheld, resumed, still_running

    withheld, resumed, still_running = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert withheld == []
    assert still_running
    assert len(resumed) >= 3 and set(resumed) == {"WATCHDOG=1"}


def test_a_supervisor_that_does_not_read_never_stalls_the_sender(systemd: Listener) -> None:
    """notify() runs on the event loop: once the socket's queue is full (a few datagrams,
    /proc/sys/net/unix/max_dgram_qlen) it drops the message instead of waiting."""
    import threading

    results: list[bool] = []
    sender = threading.Thread(target=lambda: results.extend(
        sdnotify.watchdog() for _ in range(2000)), daemon=True)
    sender.start()
    sender.join(10)
    assert not sender.is_alive(), "notify() waited for the supervisor to read"
    assert results[0] is True and False in results
    assert systemd.pending()  # what fitted was delivered
