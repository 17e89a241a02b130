from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.vault import Vault
from tests.portal.helpers import make_settings


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path / "data" / "vault")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)
