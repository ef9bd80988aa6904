"""One Ray cluster per test session, shared by every integration test.

Ray gets more logical CPUs than the machine has (Serve's proxy, ingress and replicas each hold one)
and one logical GPU, so fractional-GPU placement is tested without a GPU.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from pathlib import Path

import pytest


HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if HERE in item.path.parents:
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


# --- serving: ONE Serve app for the whole session (Serve LLM start-up takes ~60-80 s) ---------------
REMOTE_KEY_ENV = "CONTROLPLANE_TEST_REMOTE_KEY"


def serving_test_config(http_port: int) -> dict:
    """Models of the shared test app; tests of every part use `default`, `scripted`, `scripted-slow`."""
    return {
        "router": {"agent": {"max_in_flight": 64}, "request_timeout_s": 60},
        "models": {
            # Callers' timeouts must not open its breaker (the overload test) until the breaker stops
            # counting a caller's timeout as a backend failure.
            "default": {"kind": "vllm", "max_context_tokens": 2048, "kv_cache_space_gb": 1,
                        "replicas": {"num_cpus": 1}, "breaker": {"failure_threshold": 1000}},
            "scripted": {"kind": "scripted", "latency_s": 0.0,
                         "replies": [{"match": "(?i)capital of france", "text": "Paris"},
                                     {"match": "(?i)json please", "text": '{"answer": "yes"}'}]},
            "scripted-slow": {"kind": "scripted", "latency_s": 0.2},
            # Replies only after 20 s, for cancellation tests.
            "scripted-hang": {"kind": "scripted", "latency_s": 20.0},
            # Two replicas, for prefix-affinity routing tests.
            "scripted-pair": {"kind": "scripted", "replicas": {"min_replicas": 2, "max_replicas": 2, "num_cpus": 0}},
            # A model with its own tight limit, for 429 tests.
            "scripted-limited": {"kind": "scripted", "limits": {"rpm": 2}},
            # The router's own HTTP API as a remote OpenAI-compatible backend.
            "remote": {"kind": "openai", "base_url": f"http://127.0.0.1:{http_port}/v1",
                       "remote_model": "scripted", "api_key_env": REMOTE_KEY_ENV},
            # A backend that is down (nothing listens on port 9): its breaker opens, `scripted` answers.
            "down": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "remote_model": "x",
                     "breaker": {"failure_threshold": 2, "open_s": 30}, "fallback": "scripted"},
        },
    }


@pytest.fixture(scope="session")
def router(ray_cluster, http_port):
    """The RouterClient of the shared Serve app `controlplane` (models: see serving_test_config)."""
    import os

    from ray import serve

    from controlplane.config import ServingConfig
    from serving import deploy

    os.environ.setdefault(REMOTE_KEY_ENV, "test-key")
    client = deploy(ServingConfig.model_validate(serving_test_config(http_port)), app_name="controlplane",
                    http_port=http_port)
    yield client
    serve.shutdown()


@pytest.fixture(scope="session")
def router_base_url(router, http_port) -> str:
    """The OpenAI-compatible base URL of the shared app, e.g. for `openai.OpenAI(base_url=...)`."""
    return f"http://127.0.0.1:{http_port}/v1"
