"""A deep fuzz run (``FORESIGHT_FUZZ=deep``) takes as long as it needs: no per-test timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.budget import PROFILE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE == "deep":
        for item in items:
            if Path(__file__).parent in item.path.parents:
                item.add_marker(pytest.mark.timeout(0))
