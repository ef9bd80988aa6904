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


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.unit)
