from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    """Unit tests are pure logic: starting Ray here is a bug in the test or the code under test."""
    try:
        import ray
    except ImportError:
        return
    def refuse(*args, **kwargs):
        raise RuntimeError("unit tests must not start Ray; move this test to tests/integration")
    monkeypatch.setattr(ray, "init", refuse)


HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.unit)
