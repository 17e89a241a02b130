"""The delivery modules, one job each: the loop (worker) ties the others together and
nothing imports it back; the scheduler, the connections and the transaction do not lean
on one another; the outcomes are pure (no sockets, files, clock or log)."""

from __future__ import annotations

from tests.policy.test_layering import GATEWAY, imports

SPOOL = GATEWAY / "spool"
JOBS = {"scheduler", "connections", "transaction", "dsn", "worker"}


def spool_imports(module: str) -> set[str]:
    return {name.removeprefix("gateway.spool.") for name in imports(SPOOL / f"{module}.py")
            if name.startswith("gateway.spool.")}


def test_only_the_loop_ties_the_jobs_together_and_nothing_imports_the_loop() -> None:
    for path in sorted(GATEWAY.rglob("*.py")):
        if path.parent == SPOOL and path.stem == "worker":
            continue
        # The composition root builds the loop; no one else knows it.
        assert "gateway.spool.worker" not in imports(path) or path.name == "app.py", path
    for job in JOBS - {"worker"}:
        leaning = spool_imports(job) & JOBS
        assert leaning == set(), f"{job} imports {leaning}"


def test_outcomes_decide_without_io() -> None:
    found = imports(SPOOL / "outcomes.py")
    for name in found:
        top = name.split(".")[0]
        assert top not in {"asyncio", "aiosmtplib", "aiohttp", "socket", "os", "time",
                           "threading", "subprocess"}, name
    assert {n for n in found if n.startswith("gateway")} <= {
        "gateway.config", "gateway.spool.retry", "gateway.spool.store"}
