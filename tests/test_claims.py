"""docs/claims.md says which tests defend each claim of the README: every test it names
exists (read from the test files with ast, as pytest would collect it), so renaming or
removing a test without the table fails here; and every row of its tables names a test
or says why it has none."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "docs" / "claims.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def collected_tests(path: Path) -> set[str]:
    """The test functions pytest collects from a file: top level, or in a Test class."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        scopes = [node]
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            scopes = list(node.body)
        found |= {n.name for n in scopes if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.name.startswith("test_")}
    return found


def rows(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if re.match(r"\| [A-Z]\d+ \|", line)]


def test_every_test_the_claims_table_names_exists() -> None:
    named = NAMED.findall(CLAIMS.read_text(encoding="utf-8"))
    assert len(named) > 300
    missing = []
    for file, name in sorted(set(named)):
        path = ROOT / file
        if not path.is_file() or name not in collected_tests(path):
            missing.append(f"{file}::{name}")
    assert missing == [], "docs/claims.md names tests that do not exist"


def test_every_claim_names_its_tests_or_says_why_it_has_none() -> None:
    table = rows(CLAIMS.read_text(encoding="utf-8"))
    assert len(table) > 100
    ids = [row.split(" | ")[0][2:] for row in table]
    assert len(ids) == len(set(ids)), "a claim's number given twice"
    for row in table:
        tests_cell = row.split(" | ")[2]
        assert NAMED.search(tests_cell) or tests_cell.startswith("Not tested"), row[:80]
        if tests_cell.startswith("Not tested"):
            assert row.split(" | ")[3].strip(" |"), f"{row[:40]}: say why"


def test_the_check_would_notice_a_test_that_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "test_x.py"
    path.write_text("def test_a():\n    pass\n\nclass TestB:\n    def test_c(self):\n"
                    "        pass\n\ndef helper():\n    def test_inner():\n        pass\n")
    assert collected_tests(path) == {"test_a", "test_c"}
