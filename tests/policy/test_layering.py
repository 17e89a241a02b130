"""policy, inspect and the message model stand on the leaf modules only (inspect on the
model too): nothing from above leaks in."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
ALLOWED = {
    "policy": {"gateway.types", "gateway.errors", "gateway.policy"},
    "inspect": {"gateway.types", "gateway.errors", "gateway.inspect", "gateway.message"},
    "message": {"gateway.types", "gateway.errors", "gateway.message"},
}
THIRD_PARTY = {"pydantic", "magic", "pybase64"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_the_package_imports_only_leaves_stdlib_and_its_libraries(package: str) -> None:
    for module in sorted((GATEWAY / package).glob("*.py")):
        for name in imports(module):
            top = name.split(".")[0]
            if top == "gateway":
                assert any(name == a or name.startswith(a + ".") for a in ALLOWED[package]), (
                    f"{module.name} imports {name}"
                )
            else:
                assert top in sys.stdlib_module_names or top in THIRD_PARTY, f"{module.name} imports {name}"
