"""One Ray cluster per test session, shared by every integration test.

Ray gets more logical CPUs than the machine has (Serve's proxy, ingress and replicas each hold one)
and one logical GPU, so fractional-GPU placement is tested without a GPU.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], *, timeout_s: float = 60.0, interval_s: float = 0.1, what: str = "condition"):
    """Poll until `condition()` is truthy and return its value; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=16, num_gpus=1, include_dashboard=False, namespace="controlplane-tests",
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def http_port() -> int:
    return free_port()
