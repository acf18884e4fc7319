"""The fuzz suite's fixtures; a deep run (``FORESIGHT_FUZZ=deep``) takes as long as it needs:
no per-test timeout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.clickhouse import ChdbStore
from connectors.clickhouse_schema import create_tables
from tests.fuzz.budget import PROFILE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE == "deep":
        for item in items:
            if Path(__file__).parent in item.path.parents:
                item.add_marker(pytest.mark.timeout(0))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    """A chdb store with Foresight's tables, shared by a module's examples."""
    store = ChdbStore(str(tmp_path_factory.mktemp("chdb") / "chdb"))
    try:
        create_tables(store, ttl_days=30)
        yield store
    finally:
        store.close()
