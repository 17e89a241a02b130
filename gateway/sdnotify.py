"""A tiny sd_notify(3) client: readiness, reload, stop and watchdog messages to systemd.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: an AF_UNIX datagram socket,
given as a path or, when it starts with ``@``, as a name in the abstract namespace. Each
message is one datagram of newline-separated ``KEY=VALUE`` lines. Without the variable
(``pli run`` from a terminal, in a container, in tests) every call does nothing.

The unit uses ``Type=notify`` with ``ExecReload=kill -HUP``: on SIGHUP the server sends
``RELOADING=1`` then ``READY=1`` once the policy is read again. ``MONOTONIC_USEC`` goes with
``RELOADING=1`` as systemd 253 and later expect; older versions ignore it.

With ``WatchdogSec=`` in the unit, systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``)
and restarts the service when ``WATCHDOG=1`` stops arriving; :func:`watchdog_loop` sends it
at half that interval, and only while the server says it is healthy.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

from gateway.logs import get_logger

log = get_logger("pli.sdnotify")

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def _address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode("utf-8")  # abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # vsock:… and other forms systemd may add: not for a process on this host


def notify(state: str) -> bool:
    """Send ``state`` (``KEY=VALUE`` lines) to systemd. False when there is nobody to tell.

    Never raises and never waits: a service must not fail, nor stall, because its
    supervisor went away or is slow to read."""
    raw = os.environ.get(NOTIFY_SOCKET)
    if not raw:
        return False
    address = _address(raw)
    if address is None:
        return False
    try:
        # Non-blocking: called on the event loop, it must never wait for a supervisor
        # that reads slowly; a message that does not fit is dropped and logged.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                           | socket.SOCK_NONBLOCK) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("sdnotify.failed", error=exc.strerror or type(exc).__name__)
        return False
    return True


def _with_status(state: str, status: str | None) -> str:
    if status:
        return f"{state}\nSTATUS={' '.join(status.split())}"
    return state


def ready(status: str | None = None) -> bool:
    """Start-up (or a reload) is complete: the listeners accept connections."""
    return notify(_with_status("READY=1", status))


def reloading(status: str | None = None) -> bool:
    """A reload begins; follow it with :func:`ready` once done, whatever the outcome."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(_with_status(f"RELOADING=1\nMONOTONIC_USEC={usec}", status))


def stopping(status: str | None = None) -> bool:
    """Shutdown begins (SIGTERM): systemd shows "deactivating" while sessions drain."""
    return notify(_with_status("STOPPING=1", status))


def status(text: str) -> bool:
    """A one-line state shown by ``systemctl status``."""
    return notify(f"STATUS={' '.join(text.split())}")


def watchdog() -> bool:
    """Tell systemd the service is alive."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between two pings (half of ``WatchdogSec=``), or None when not watched.

    Like sd_watchdog_enabled(3): ``$WATCHDOG_PID``, when set, must be this process, so a
    child that inherited the environment does not ping for its parent."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


async def watchdog_loop(is_healthy: Callable[[], bool],
                        interval: float | None = None) -> None:
    """Ping the watchdog every ``interval`` seconds (default: :func:`watchdog_interval`)
    while ``is_healthy()`` holds; returns at once when systemd does not watch.

    A stuck event loop sends nothing either, so systemd restarts a hung server too. An
    exception from ``is_healthy`` counts as unhealthy. Run it as a task; cancel it to stop."""
    if interval is None:
        interval = watchdog_interval()
    if interval is None:
        return
    healthy = True
    while True:
        try:
            now_healthy = bool(is_healthy())
            reason = ""
        except Exception as exc:  # noqa: BLE001 - a failing check is unhealthy
            now_healthy, reason = False, type(exc).__name__
        if now_healthy:
            watchdog()
        if now_healthy != healthy:
            if now_healthy:
                log.info("sdnotify.watchdog_resumed")
            else:
                log.error("sdnotify.watchdog_withheld", error=reason or None)
            healthy = now_healthy
        await asyncio.sleep(interval)
