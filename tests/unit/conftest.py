import os
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


@pytest.fixture(autouse=True)
def _ray_auth_mode_restored():
    """The CLI's commands set RAY_AUTH_MODE (`use_token_auth`) for the cluster they join. A unit test that runs one in
    this process must not leave it set: Ray reads it once, at import, so a Ray that a later test in the same session
    starts would ask for a token its driver does not send."""
    before = os.environ.get("RAY_AUTH_MODE")
    yield
    if before is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = before


HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.unit)
