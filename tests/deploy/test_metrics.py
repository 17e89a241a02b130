"""/metrics and /healthz on their own listener, read over loopback like Prometheus would."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.metrics import (
    CONTENT_TYPE,
    Metrics,
    build_metrics_app,
    check_writable,
    gateway_health,
    observer,
    spool_queue_stats,
    start_metrics,
)
from gateway.spool.store import QueuedMessage, Recipient, Spool
from tests.support import LoopThread

# -- a strict reader of the text exposition format (version 0.0.4) ---------------------

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)?)\})?'
    r' (?P<value>[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?|Inf|NaN))$'
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Exposition = dict[str, dict[str, Any]]


def parse(text: str) -> Exposition:
    """Families by name: help, type and samples {frozenset(labels): value}.

    Fails on anything Prometheus would refuse or that is ambiguous: a sample before its
    TYPE, a family split in two, a duplicate series, a missing final newline."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    families: Exposition = {}
    current: str | None = None
    seen_samples: set[tuple[str, frozenset[tuple[str, str]]]] = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"family {name} appears twice"
            families[name] = {"help": help_text, "type": None, "samples": {}}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current, f"TYPE {name} does not follow its HELP"
            assert families[name]["type"] is None
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            families[name]["type"] = kind
        else:
            assert not line.startswith("#"), f"unexpected comment {line!r}"
            match = _SAMPLE.match(line)
            assert match, f"not a valid sample line: {line!r}"
            name = match["name"]
            assert name == current and families[name]["type"], f"{name} sampled out of place"
            labels = frozenset(_LABEL.findall(match["labels"] or ""))
            assert (name, labels) not in seen_samples, f"duplicate series {line!r}"
            seen_samples.add((name, labels))
            families[name]["samples"][labels] = float(match["value"])
    for name, family in families.items():
        assert family["type"], f"{name} has no TYPE"
        if family["type"] == "counter":
            assert name.endswith("_total")
            assert all(v >= 0 for v in family["samples"].values())
    return families


def sample(families: Exposition, name: str, **labels: str) -> float:
    return float(families[name]["samples"][frozenset(labels.items())])


# -- the registry -----------------------------------------------------------------------


def test_every_required_family_is_exposed_with_help_and_type() -> None:
    families = parse(Metrics(queue=lambda: (0, 0.0)).render())
    for name, kind in {
        "pli_messages_decided_total": "counter",
        "pli_deliveries_total": "counter",
        "pli_queue_messages": "gauge",
        "pli_queue_oldest_message_age_seconds": "gauge",
        "pli_portal_downloads_total": "counter",
        "pli_portal_code_failures_total": "counter",
    }.items():
        assert families[name]["type"] == kind
        assert families[name]["help"]
    # Series exist at 0 before the first event, so rate() and alerts work from the start.
    for action in ("pass", "protect", "block"):
        assert sample(families, "pli_messages_decided_total", action=action) == 0
    for outcome in ("sent", "deferred", "bounced"):
        assert sample(families, "pli_deliveries_total", outcome=outcome) == 0


def test_events_count_by_decision_and_outcome() -> None:
    metrics = Metrics()
    for action in ("pass", "protect", "protect", "block", "mystery"):
        metrics.observe("policy.decided", {"action": action, "rule": "x"})
    for event in ("delivery.sent", "delivery.sent", "delivery.deferred", "delivery.bounced",
                  "delivery.expired", "portal.download", "portal.code_rejected",
                  "portal.code_rejected", "session.auth_failed", "session.refused_busy",
                  "session.login_timeout", "spool.queued"):
        metrics.observe(event, {})
    families = parse(metrics.render())
    assert sample(families, "pli_messages_decided_total", action="pass") == 1
    assert sample(families, "pli_messages_decided_total", action="protect") == 2
    assert sample(families, "pli_messages_decided_total", action="block") == 1
    # An unknown action never becomes a label value.
    assert len(families["pli_messages_decided_total"]["samples"]) == 3
    assert sample(families, "pli_deliveries_total", outcome="sent") == 2
    assert sample(families, "pli_deliveries_total", outcome="deferred") == 1
    assert sample(families, "pli_deliveries_total", outcome="bounced") == 2  # expired too
    assert sample(families, "pli_portal_downloads_total") == 1
    assert sample(families, "pli_portal_code_failures_total") == 2
    # Only a download counted against a document's limit is one; fetching its bytes under
    # the grant, whole or by ranges, is not another.
    for outcome in ("head", "partial", "complete", "interrupted", "limit_reached",
                    "code_required", "grant_required"):
        metrics.observe("portal.download", {"outcome": outcome, "object": "file"})
    metrics.observe("portal.download", {"outcome": "counted", "object": "file"})
    assert metrics.value("pli_portal_downloads_total") == 2
    assert sample(families, "pli_auth_failures_total") == 1
    assert sample(families, "pli_sessions_refused_total") == 2


def test_label_values_and_help_are_escaped() -> None:
    metrics = Metrics()
    metrics.gauge("pli_test_escape", 'help with \\ and\nnewline', ("what",),
                  callback=lambda: {('a"b\\c\nd',): 2.5})
    families = parse(metrics.render())
    assert families["pli_test_escape"]["help"] == "help with \\\\ and\\nnewline"
    [(labels, value)] = families["pli_test_escape"]["samples"].items()
    assert labels == frozenset({("what", 'a\\"b\\\\c\\nd')}) and value == 2.5


def test_registry_refuses_bad_names() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError):
        metrics.counter("pli_no_suffix", "a counter must end in _total")
    with pytest.raises(ValueError):
        metrics.counter("pli_deliveries_total", "duplicate")
    with pytest.raises(ValueError):
        metrics.gauge("pli-dash", "bad name")
    with pytest.raises(ValueError):
        metrics.inc("pli_deliveries_total")  # needs its outcome label


def test_a_failing_queue_reader_leaves_the_page_up() -> None:
    def broken() -> tuple[int, float]:
        raise PermissionError("spool")

    families = parse(Metrics(queue=broken).render())
    assert families["pli_queue_messages"]["samples"] == {}
    assert sample(families, "pli_deliveries_total", outcome="sent") == 0


def test_the_queue_is_read_once_per_scrape() -> None:
    calls = []

    def queue() -> tuple[int, float]:
        calls.append(1)
        return 2, 30.0

    Metrics(queue=queue).render()
    assert len(calls) == 1


# -- structlog: counting what the server logs -------------------------------------------


@pytest.fixture
def configured_logs() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_observer_counts_logged_events_and_leaves_them_unchanged(
        configured_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = Metrics()
    structlog.configure(
        processors=[observer(metrics), structlog.processors.JSONRenderer(sort_keys=True)],
        logger_factory=structlog.PrintLoggerFactory(),
    )
    log = structlog.get_logger("test")
    log.info("policy.decided", action="protect", rule="patients", recipients=["a@b.fr"])
    log.info("delivery.sent", queue_id="q1", recipient="a@b.fr")
    log.info("delivery.deferred", queue_id="q2", recipient="c@d.fr")
    log.warning("delivery.bounced", queue_id="q3", recipient="e@f.fr")
    log.info("portal.download", link="L1", object="file", outcome="counted")
    log.info("portal.code_rejected", link="L1", outcome="wrong")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ('{"action": "protect", "event": "policy.decided", '
                      '"recipients": ["a@b.fr"], "rule": "patients"}')
    assert len(out) == 6
    assert metrics.value("pli_messages_decided_total", "protect") == 1
    assert metrics.value("pli_deliveries_total", "sent") == 1
    assert metrics.value("pli_deliveries_total", "deferred") == 1
    assert metrics.value("pli_deliveries_total", "bounced") == 1
    assert metrics.value("pli_portal_downloads_total") == 1
    assert metrics.value("pli_portal_code_failures_total") == 1


# -- gauges from the spool ---------------------------------------------------------------


def _queue(spool: Spool, queue_id: str, age: float) -> None:
    now = time.time()
    spool.enqueue(QueuedMessage(id=queue_id, mail_from="a@cabinet.fr",
                                recipients=[Recipient("b@example.org")], created=now - age,
                                size=10, route_sender="a@cabinet.fr"), b"Subject: x\r\n\r\nx\r\n")
    os.utime(spool.queue_dir / queue_id, (now - age, now - age))


def test_spool_queue_stats(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    stats = spool_queue_stats(spool.root)
    assert stats() == (0, 0.0)  # not created yet
    spool.create()
    assert stats() == (0, 0.0)
    _queue(spool, "Q1", age=60)
    _queue(spool, "Q2", age=600)
    count, age = stats()
    assert count == 2 and 599 <= age <= 610
    spool.remove("Q2")
    count, age = stats()
    assert count == 1 and 59 <= age <= 70


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` where nobody may write: by its mode, or for root (who writes whatever the
    mode says) by a read-only bind mount of it over itself."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], check=False,
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot bind-mount here: {mounted.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True,
                       capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


def test_check_writable(tmp_path: Path) -> None:
    assert check_writable(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    assert check_writable(tmp_path / "missing") is not None
    spool = tmp_path / "spool"
    spool.mkdir()
    with read_only(spool):
        assert "not writable" in (check_writable(spool) or "")
    assert check_writable(spool) is None


# -- over HTTP, on loopback ---------------------------------------------------------------

needs_aiohttp = pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None,
                                   reason="aiohttp is not installed (pip install -e .)")


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


class Served:
    def __init__(self, loop: LoopThread, metrics: Metrics, health: Any) -> None:
        self.loop = loop
        self.runner = loop.run(start_metrics("127.0.0.1", 0, build_metrics_app(metrics, health)))
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"

    def close(self) -> None:
        self.loop.run(self.runner.cleanup())


@pytest.fixture
def serve(loop: LoopThread) -> Iterator[Any]:
    served: list[Served] = []

    def start(metrics: Metrics, health: Any) -> Served:
        served.append(Served(loop, metrics, health))
        return served[-1]

    yield start
    for s in served:
        s.close()


@needs_aiohttp
def test_metrics_page_over_http(serve: Any, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    _queue(spool, "Q1", age=120)
    metrics = Metrics(queue=spool_queue_stats(spool.root))
    metrics.observe("delivery.sent", {})
    server = serve(metrics, lambda: (True, "ok"))
    status, content_type, body = _get(server.base + "/metrics")
    assert status == 200 and content_type == CONTENT_TYPE
    families = parse(body)
    assert sample(families, "pli_queue_messages") == 1
    assert 119 <= sample(families, "pli_queue_oldest_message_age_seconds") < 200
    assert sample(families, "pli_deliveries_total", outcome="sent") == 1


@needs_aiohttp
def test_healthz_ok_and_unhealthy(serve: Any) -> None:
    state = {"ok": True, "reason": "ok"}
    server = serve(Metrics(), lambda: (state["ok"], state["reason"]))
    assert _get(server.base + "/healthz")[::2] == (200, "ok\n")
    state.update(ok=False, reason="spool not writable: No space left on device")
    assert _get(server.base + "/healthz")[::2] == (
        503, "spool not writable: No space left on device\n")


@needs_aiohttp
def test_healthz_when_the_check_itself_fails(serve: Any) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server = serve(Metrics(), broken)
    status, _, body = _get(server.base + "/healthz")
    assert status == 503 and "RuntimeError" in body
    assert _get(server.base + "/nothing")[0] == 404


def test_gateway_health_follows_the_listeners_and_the_spool(loop: LoopThread,
                                                            tmp_path: Path) -> None:
    async def listen() -> asyncio.AbstractServer:
        return await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)

    spool_tmp = tmp_path / "spool" / "tmp"
    spool_tmp.mkdir(parents=True)
    servers: list[asyncio.AbstractServer] = []
    health = gateway_health(lambda: servers, spool_tmp)
    assert health() == (False, "SMTP listeners not started")
    servers.append(loop.run(listen()))
    assert health() == (True, "ok")
    spool_tmp.rmdir()
    ok, reason = health()
    assert not ok and reason.startswith("spool not writable")
    spool_tmp.mkdir()

    async def close() -> None:
        servers[0].close()
        await servers[0].wait_closed()

    loop.run(close())  # what SIGTERM does first: /healthz turns 503 while sessions drain
    assert health() == (False, "SMTP listeners not accepting connections")
