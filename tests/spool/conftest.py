from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs


@pytest.fixture
def events() -> Iterator[list[Any]]:
    """The structured log events emitted while the test runs (Pli's own, in this process)."""
    with capture_logs() as captured:
        yield captured
