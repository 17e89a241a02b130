"""``/healthz`` and a Prometheus ``/metrics`` on their own listener (127.0.0.1:9925).

Counters follow the log: :func:`observer` is a structlog processor that counts the events
the server already writes (``policy.decided``, ``delivery.sent``, …), so nothing in the
message path calls this module and a count can never disagree with the journal. Gauges
are read when scraped, through callbacks (the queue's depth and oldest message).

No third-party client library: :class:`Metrics` is a small registry that writes the
Prometheus text exposition format (version 0.0.4) with ``# HELP`` and ``# TYPE`` lines.
Nothing here carries health data: label values are fixed words (pass, sent, …), never
addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__, events

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.spool.store import DiskRoom

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9925
HEALTH_TIMEOUT = 5.0

Health = Callable[[], tuple[bool, str]]
QueueStats = Callable[[], tuple[int, float]]  # (messages queued, age of the oldest in s)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

ACTIONS = ("pass", "protect", "block")
OUTCOMES = ("sent", "deferred", "bounced")

# Log event (names from gateway.events) → (counter, label value or None). delivery.expired
# is a final failure after days of retries: the sender gets a bounce, so it counts as
# "bounced". policy.decided is counted by its action, in Metrics.observe.
_EVENTS: dict[str, tuple[str, str | None]] = {
    events.DELIVERY_SENT: ("pli_deliveries_total", "sent"),
    events.DELIVERY_DEFERRED: ("pli_deliveries_total", "deferred"),
    events.DELIVERY_BOUNCED: ("pli_deliveries_total", "bounced"),
    events.DELIVERY_EXPIRED: ("pli_deliveries_total", "bounced"),
    events.PORTAL_DOWNLOAD: ("pli_portal_downloads_total", None),
    events.PORTAL_CODE_REJECTED: ("pli_portal_code_failures_total", None),
    events.SESSION_AUTH_FAILED: ("pli_auth_failures_total", None),
    events.SESSION_REFUSED_BUSY: ("pli_sessions_refused_total", None),
    events.SESSION_LOGIN_TIMEOUT: ("pli_sessions_refused_total", None),
    events.POLICY_RELOADED: ("pli_policy_reloads_total", "ok"),
    events.POLICY_RELOAD_FAILED: ("pli_policy_reloads_total", "failed"),
    events.SESSION_DISK_FULL: ("pli_disk_full_refusals_total", None),
    events.PIPELINE_DISK_FULL: ("pli_disk_full_refusals_total", None),
}
COUNTED: frozenset[str] = frozenset({events.POLICY_DECIDED, *_EVENTS})
"""The events the counters follow."""


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


Samples = Mapping[tuple[str, ...], float]


@dataclass
class _Family:
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...]
    values: dict[tuple[str, ...], float] = field(default_factory=dict)
    callback: Callable[[], float | Samples] | None = None

    def samples(self) -> Iterable[tuple[tuple[str, ...], float]]:
        if self.callback is not None:
            try:
                got = self.callback()
            except Exception:  # noqa: BLE001
                return []  # a gauge that cannot be read is left out, the page still loads
            if isinstance(got, Mapping):
                return sorted(got.items())
            return [((), float(got))]
        return sorted(self.values.items())

    def render(self, out: list[str], constant: Sequence[tuple[str, str]] = ()) -> None:
        """``constant``: labels every sample carries (the instance's name)."""
        samples = list(self.samples())
        out.append(f"# HELP {self.name} {_escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        for key, value in samples:
            if self.labels or constant:
                pairs = ",".join(f'{label}="{_escape_label(v)}"' for label, v in (
                    *constant, *zip(self.labels, key, strict=True)))
                out.append(f"{self.name}{{{pairs}}} {format_value(value)}")
            else:
                out.append(f"{self.name} {format_value(value)}")


class Metrics:
    """Counters and gauges of one server, written in the Prometheus text format.

    Thread-safe: events logged from worker threads count too."""

    def __init__(self, queue: QueueStats | None = None,
                 free_bytes: Callable[[], float] | None = None,
                 certificate_expiry: Callable[[], float] | None = None,
                 instance: str | None = None) -> None:
        """``instance``: the server's name (pli.toml's ``instance``), a label of every
        sample, so the instances behind one load balancer are told apart however they
        are scraped."""
        self._constant: tuple[tuple[str, str], ...] = (
            () if instance is None else (("instance", instance),))
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()
        self.counter("pli_messages_decided_total",
                     "Policy decisions by action; a message to mixed recipients counts once "
                     "per recipient group.", ("action",), initial=[(a,) for a in ACTIONS])
        self.counter("pli_deliveries_total",
                     "Delivery attempts to the provider by outcome, per recipient "
                     "(bounced includes recipients given up after the retry lifetime).",
                     ("outcome",), initial=[(o,) for o in OUTCOMES])
        self.counter("pli_portal_downloads_total", "Downloads of documents granted by the "
                     "portal (each counted against that document's limit).", initial=[()])
        self.counter("pli_portal_code_failures_total", "Wrong access codes typed on the "
                     "portal.", initial=[()])
        self.counter("pli_auth_failures_total", "Failed SMTP logins.", initial=[()])
        self.counter("pli_sessions_refused_total", "SMTP connections refused over the "
                     "session limits or closed for not logging in in time (421 4.7.0).",
                     initial=[()])
        self.counter("pli_policy_reloads_total", "Policy reloads (SIGHUP) by result.",
                     ("result",), initial=[("ok",), ("failed",)])
        self.counter("pli_disk_full_refusals_total", "Messages refused with 452 4.3.1 because "
                     "the disk holding the spool and vault was (nearly) full.", initial=[()])
        if free_bytes is not None:
            self.gauge("pli_data_free_bytes", "Free space on the disk holding the spool and "
                       "vault (the least of the two).", callback=free_bytes)
        if certificate_expiry is not None:
            self.gauge("pli_tls_certificate_expiry_seconds", "When the certificate the "
                       "submission ports present stops being valid, in Unix time.",
                       callback=certificate_expiry)
        self._queue: QueueStats | None = queue
        self._queue_now: tuple[int, float] | None = (0, 0.0) if queue is None else None
        self.gauge("pli_queue_messages", "Messages waiting in the spool for delivery.",
                   callback=lambda: self._queue_stats()[0])
        self.gauge("pli_queue_oldest_message_age_seconds",
                   "Age of the oldest message in the spool; 0 when it is empty.",
                   callback=lambda: self._queue_stats()[1])
        started = time.time()
        self.gauge("pli_start_time_seconds", "When this server started, in Unix time.",
                   callback=lambda: started)
        self.gauge("pli_build_info", "The running version of Pli.", ("version",),
                   callback=lambda: {(__version__,): 1.0})

    # -- registry ---------------------------------------------------------------------

    def counter(self, name: str, help: str, labels: Sequence[str] = (),
                initial: Iterable[tuple[str, ...]] = ()) -> None:
        """Declare a counter; ``initial`` label sets are shown as 0 before any event."""
        family = self._add(name, "counter", help, labels)
        for key in initial:
            family.values[self._key(family, key)] = 0.0

    def gauge(self, name: str, help: str, labels: Sequence[str] = (), *,
              callback: Callable[[], float | Samples] | None = None) -> None:
        """Declare a gauge, read from ``callback`` at each scrape or set with :meth:`set`."""
        family = self._add(name, "gauge", help, labels)
        family.callback = callback

    def _add(self, name: str, kind: str, help: str, labels: Sequence[str]) -> _Family:
        if not _NAME.match(name) or name in self._families:
            raise ValueError(f"bad or duplicate metric name {name!r}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name!r}")
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"bad label name {label!r}")
        family = _Family(name, kind, help, tuple(labels))
        self._families[name] = family
        return family

    @staticmethod
    def _key(family: _Family, key: tuple[str, ...]) -> tuple[str, ...]:
        if len(key) != len(family.labels):
            raise ValueError(f"{family.name} takes labels {family.labels}, got {key}")
        return tuple(str(v) for v in key)

    def inc(self, name: str, *labels: str, amount: float = 1.0) -> None:
        family = self._families[name]
        if family.kind != "counter" or amount < 0:
            raise ValueError(f"{name} only goes up")
        key = self._key(family, labels)
        with self._lock:
            family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, *labels: str) -> None:
        family = self._families[name]
        if family.kind != "gauge" or family.callback is not None:
            raise ValueError(f"{name} is not a settable gauge")
        with self._lock:
            family.values[self._key(family, labels)] = float(value)

    def value(self, name: str, *labels: str) -> float:
        """Current value (for tests and ``pli`` commands); 0 for a label set never seen."""
        family = self._families[name]
        key = self._key(family, labels)
        if family.callback is not None:
            self._read_queue()
            return dict(family.samples()).get(key, 0.0)
        with self._lock:
            return family.values.get(key, 0.0)

    # -- events -------------------------------------------------------------------------

    def observe(self, event: str, fields: Mapping[str, Any]) -> None:
        """Count one log event; events that are not metrics are ignored."""
        if event == events.POLICY_DECIDED:
            action = fields.get("action")
            action = str(getattr(action, "value", action))
            if action in ACTIONS:  # a fixed set: label values never come from a message
                self.inc("pli_messages_decided_total", action)
            return
        target = _EVENTS.get(event)
        if target is None:
            return
        if event == events.PORTAL_DOWNLOAD and fields.get("outcome", "counted") != "counted":
            return  # bytes served under a grant, a HEAD, a refusal: not another download
        name, label = target
        if label is None:
            self.inc(name)
        else:
            self.inc(name, label)

    # -- exposition ---------------------------------------------------------------------

    def watch_queue(self, queue: QueueStats) -> None:
        """Read the queue gauges from ``queue`` (when it was not given at construction)."""
        self._queue = queue
        self._queue_now = None

    def _queue_stats(self) -> tuple[int, float]:
        if self._queue_now is None:
            raise LookupError("queue statistics unavailable")
        return self._queue_now

    def _read_queue(self) -> None:
        """Read the spool once per scrape for both queue gauges."""
        if self._queue is not None:
            try:
                count, age = self._queue()
                self._queue_now = (int(count), float(age))
            except Exception:  # noqa: BLE001 - shown as absent, not as a failed page
                self._queue_now = None

    def render(self) -> str:
        """The whole registry in the text exposition format; blocking (gauge callbacks may
        read the disk), so the HTTP handler runs it in a thread."""
        out: list[str] = []
        self._read_queue()
        with self._lock:
            families = list(self._families.values())
            snapshot = {f.name: dict(f.values) for f in families}
        for family in families:
            if family.callback is None:
                family = _Family(family.name, family.kind, family.help, family.labels,
                                 snapshot[family.name])
            family.render(out, self._constant)
        return "\n".join(out) + "\n"


def observer(metrics: Metrics) -> Callable[[Any, str, MutableMapping[str, Any]],
                                            MutableMapping[str, Any]]:
    """A structlog processor counting events into ``metrics``; put it before the renderer.

    It never changes the event and never raises: a metrics bug cannot lose a log line."""

    def observe(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event = event_dict.get("event")
        if isinstance(event, str):
            with contextlib.suppress(Exception):
                metrics.observe(event, event_dict)
        return event_dict

    return observe


# -- gauges and health the server plugs in ----------------------------------------------


def spool_queue_stats(spool_root: Path, clock: Callable[[], float] = time.time) -> QueueStats:
    """(depth, oldest age) of a spool folder: one entry per queue file, aged by its
    modification time (a queue file is written once, when the message is queued)."""

    def stats() -> tuple[int, float]:
        queue = spool_root / "queue"
        try:
            entries = list(os.scandir(queue))
        except FileNotFoundError:
            return 0, 0.0
        oldest: float | None = None
        for entry in entries:
            try:
                created = entry.stat().st_mtime
            except FileNotFoundError:
                continue  # delivered and removed while we looked
            oldest = created if oldest is None else min(oldest, created)
        age = 0.0 if oldest is None else max(0.0, clock() - oldest)
        return len(entries), age

    return stats


def check_writable(folder: Path) -> str | None:
    """None when a file can be created, written and removed in ``folder``; else why not."""
    probe = folder / f".healthz.{os.getpid()}.{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return f"spool not writable: {exc.strerror or type(exc).__name__}"
    return None


def gateway_health(listeners: Callable[[], Sequence[asyncio.AbstractServer]],
                   spool_tmp: Path, room: DiskRoom | None = None) -> Health:
    """The health ``pli run`` reports: every SMTP listener accepting, the spool writable
    and, with ``room``, enough free space that new mail is not refused.

    ``listeners`` returns the intake's servers (empty before start-up): after SIGTERM they
    stop serving, so /healthz turns 503 while the server drains."""

    def health() -> tuple[bool, str]:
        servers = listeners()
        if not servers:
            return False, "SMTP listeners not started"
        if not all(s.is_serving() for s in servers):
            return False, "SMTP listeners not accepting connections"
        problem = check_writable(spool_tmp)
        if problem:
            return False, problem
        if room is not None and not room.enough():
            return False, (f"disk almost full: {room.free() / 2**20:.1f} MiB free for the "
                           f"spool and vault; new mail is refused (452) below "
                           f"{room.need / 2**20:.1f} MiB")
        return True, "ok"

    return health


# -- the HTTP side ----------------------------------------------------------------------


def build_metrics_app(metrics: Metrics, health: Health) -> web.Application:
    """GET /healthz: 200 "ok" or 503 with the reason. GET /metrics: the exposition."""
    from aiohttp import web  # the HTTP side only; the registry and observer need nothing

    async def healthz(_: web.Request) -> web.Response:
        try:
            ok, reason = await asyncio.wait_for(asyncio.to_thread(health), HEALTH_TIMEOUT)
        except TimeoutError:
            ok, reason = False, f"health check took more than {HEALTH_TIMEOUT:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure is an unhealthy answer
            ok, reason = False, f"health check failed: {type(exc).__name__}"
        text = "ok" if ok else (reason or "unhealthy")
        return web.Response(status=200 if ok else 503, text=text + "\n",
                            headers={"Cache-Control": "no-store"})

    async def metrics_page(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.render)
        return web.Response(body=body.encode("utf-8"),
                            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def start_metrics(host: str, port: int, app: web.Application) -> web.AppRunner:
    """Listen on ``host:port``; stop with ``await runner.cleanup()``. The bound addresses
    are in ``runner.addresses`` (port 0 picks a free one)."""
    from aiohttp import web
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
