"""The portal stands on the vault, the settings, the logs and the shared failure counter,
and on nothing above them."""

from __future__ import annotations

import sys

from tests.policy.test_layering import GATEWAY, imports

ALLOWED = {"gateway.config", "gateway.logs", "gateway.vault", "gateway.portal",
           "gateway.throttle"}
THIRD_PARTY = {"aiohttp"}


def test_the_portal_imports_only_what_sits_below_it_the_stdlib_and_aiohttp() -> None:
    for module in sorted((GATEWAY / "portal").glob("*.py")):
        for name in imports(module):
            top = name.split(".")[0]
            if top == "gateway":
                assert any(name == a or name.startswith(a + ".") for a in ALLOWED), (
                    f"{module.name} imports {name}")
            else:
                assert top in sys.stdlib_module_names or top in THIRD_PARTY, (
                    f"{module.name} imports {name}")
