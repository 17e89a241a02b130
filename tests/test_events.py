"""Event names are declared once, in gateway.events: every event the package logs is
declared there, and the audit trail and the metrics follow only declared events that
something actually logs (a misspelt name on either side would lose records silently)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from gateway import events
from gateway.audit import SCHEMA
from gateway.metrics import COUNTED

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg"}
LOGGERS = {"log", "logger"}
WRITTEN_BY_THE_TRAIL = frozenset({events.AUDIT_GAP})  # records the trail makes itself


def _receiver(call: ast.Call) -> str | None:
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    value = func.value
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Attribute):
        return value.attr
    return None


def logged_events() -> tuple[dict[str, list[str]], list[str]]:
    """Every event name the package's code passes to a logger or to the audit trail (with
    where), and the log calls whose name is not written out (so cannot be checked)."""
    found: dict[str, list[str]] = defaultdict(list)
    unreadable: list[str] = []
    for path in sorted(GATEWAY.rglob("*.py")):
        where = path.relative_to(GATEWAY.parent)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            method = func.attr if isinstance(func, ast.Attribute) else (
                func.id if isinstance(func, ast.Name) else None)
            if method in LOG_METHODS and _receiver(node) in LOGGERS:
                args = node.args  # log.info("spool.queued", ...)
            elif method == "record":
                args = node.args  # trail.record("admin.user_added", ...)
            elif method == "_audit":
                args = node.args[1:]  # the command line's _audit(settings, "admin...", ...)
            else:
                continue
            first = args[0] if args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found[first.value].append(f"{where}:{node.lineno}")
            elif method in LOG_METHODS:
                unreadable.append(f"{where}:{node.lineno}")
    return found, unreadable


def test_the_scan_sees_the_log_calls_of_every_part_of_the_package() -> None:
    found, _ = logged_events()
    places = {p.split(":")[0] for where in found.values() for p in where}
    for module in ("pipeline.py", "spool/worker.py", "intake/handler.py",
                   "portal/handlers.py", "app.py", "cli.py"):
        assert f"gateway/{module}" in places, module
    assert len(found) > 40


def test_every_event_the_package_logs_is_declared() -> None:
    found, unreadable = logged_events()
    assert unreadable == [], "log calls must name their event as a string literal"
    undeclared = {name: where for name, where in found.items() if name not in events.ALL}
    assert undeclared == {}, "declare these in gateway/events.py"


def test_the_trail_and_the_metrics_follow_declared_events_that_are_logged() -> None:
    found, _ = logged_events()
    relied_on = set(SCHEMA) | COUNTED
    assert relied_on <= events.ALL
    never_logged = relied_on - set(found) - WRITTEN_BY_THE_TRAIL
    assert never_logged == set(), "nothing logs these: misspelt, or left over?"


def test_the_names_are_declared_in_a_leaf_module() -> None:
    tree = ast.parse(Path(events.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module == "__future__", node.module
        assert not isinstance(node, ast.Import)
    names = [v for k, v in vars(events).items() if k.isupper() and isinstance(v, str)]
    assert len(names) == len(set(names)) == len(events.ALL), "a name declared twice"
    assert all(n.count(".") == 1 and n == n.lower() for n in names)


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_event_names(text: str) -> set[str]:
    """Every `part.what` the text names (`delivery.sent|deferred` as two) whose part is an
    event's part, file names aside."""
    parts = {name.split(".")[0] for name in events.ALL}
    named = set()
    for found in re.finditer(r"`([a-z_]+)\.([a-z_|]+)`", text):
        named |= {f"{found[1]}.{what}" for what in found[2].split("|")
                  if found[1] in parts and what not in FILE_SUFFIXES}
    return named


FILE_SUFFIXES = {"toml", "txt", "json", "pem", "xml", "js", "eml", "md", "conf", "py"}


def test_every_event_the_readme_names_is_one_pli_logs() -> None:
    """What the README tells an administrator to look for in the log ("the log says
    `spool.held`") is logged under that very name somewhere in the package."""
    found, _ = logged_events()
    named = readme_event_names(README.read_text(encoding="utf-8"))
    assert len(named) > 25
    assert named - set(found) - WRITTEN_BY_THE_TRAIL == set()


def test_the_records_the_readme_lists_for_the_audit_trail_are_ones_it_keeps() -> None:
    """The Audit trail section's first paragraph, "Every decision and step leaves a
    record": each event it names is one the trail writes."""
    section = README.read_text(encoding="utf-8").split("### Audit trail\n\n", 1)[1]
    listed = readme_event_names(section.split("\n\n", 1)[0])
    assert {"policy.decided", "delivery.bounced", "portal.reply"} <= listed
    assert listed - set(SCHEMA) == set()
