from __future__ import annotations

import pytest

from tests.deploy.wheels import Wheelhouse, build_wheelhouse


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    """Pli's wheel and its dependencies' wheels, built once per test run (the installed
    package's test and the container image share them)."""
    return build_wheelhouse(tmp_path_factory.mktemp("wheels") / "house")
