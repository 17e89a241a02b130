from __future__ import annotations

from pathlib import Path

import pytest

from gateway.vault import Vault


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path / "data" / "vault")
