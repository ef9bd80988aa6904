"""Cancellation reaches the engine: a caller that is cancelled, times out or disconnects ends its
generation on the replica within 1 s (scripted replicas for the mechanism, vLLM for the engine itself),
and after an overload with short deadlines latency is back to normal within 5 s."""

import asyncio
import statistics
import time

import httpx
import pytest

from controlplane.errors import DeadlineExceeded
from serving import ChatMessage, ChatRequest
from tests.helpers import agent_token, listening_pids, wait_for

ABORT_WITHIN_S = 1.0


def replica(model: str):
    from ray import serve

    prefix = "vllm" if model == "default" else "scripted"
    return serve.get_deployment_handle(f"{prefix}:{model}", "controlplane")


def unfinished(model: str) -> int:
    return replica(model).unfinished_calls.remote().result(timeout_s=10)


def ask(model: str, text: str, **fields) -> ChatRequest:
    return ChatRequest(model=model, messages=[ChatMessage(role="user", content=text)],
                       token=agent_token("it-cancel", "tester"), **fields)


def seconds_until_idle(model: str) -> float:
    start = time.monotonic()
    wait_for(lambda: unfinished(model) == 0, timeout_s=10, interval_s=0.05, what=f"{model} to drop the call")
    return time.monotonic() - start


def test_cancelling_a_handle_call_ends_it_on_the_replica(router):
    async def cancel_after_start():
        task = asyncio.create_task(router.chat(ask("scripted-hang", "wait")))
        await asyncio.to_thread(wait_for, lambda: unfinished("scripted-hang") == 1, timeout_s=10,
                                what="the call to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await asyncio.to_thread(seconds_until_idle, "scripted-hang")

    assert asyncio.run(cancel_after_start()) < ABORT_WITHIN_S


def test_a_timed_out_call_ends_on_the_replica(router):
    with pytest.raises(DeadlineExceeded, match="timeout_s"):
        asyncio.run(router.chat(ask("scripted-hang", "wait", timeout_s=0.5)))
    assert seconds_until_idle("scripted-hang") < ABORT_WITHIN_S


@pytest.fixture(scope="module")
def bearer(api_key) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key('it-cancel-http', mission='it-cancel-http')}"}


def haproxy_settled(http_port: int, quiet_s: float = 3.0) -> None:
    """Wait until the HAProxy process that listens on the HTTP port has not changed for `quiet_s`. Serve restarts
    HAProxy when replicas come and go (another test's app), and a client that disconnects while its request is on
    the HAProxy process being replaced does not end its call (docs/serving.md)."""
    since, pids, deadline = time.monotonic(), listening_pids(http_port), time.monotonic() + 60
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
        if (now := listening_pids(http_port)) != pids:
            since, pids = time.monotonic(), now


def test_an_http_client_that_disconnects_ends_its_call(router_base_url, http_port, bearer):
    haproxy_settled(http_port)
    body = {"model": "scripted-hang", "stream": True, "messages": [{"role": "user", "content": "wait"}]}
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream("POST", f"{router_base_url}/chat/completions", json=body, headers=bearer,
                          timeout=1.0) as response:
            response.read()
    assert seconds_until_idle("scripted-hang") < ABORT_WITHIN_S


def test_a_disconnected_http_stream_aborts_its_vllm_request(router_base_url, bearer):
    body = {"model": "default", "stream": True, "max_tokens": 1500, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Count to a thousand."}]}
    with httpx.stream("POST", f"{router_base_url}/chat/completions", json=body, headers=bearer,
                      timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert unfinished("default") == 1  # the engine is generating
    assert seconds_until_idle("default") < ABORT_WITHIN_S


@pytest.mark.slow
def test_latency_is_back_to_normal_soon_after_an_overload_with_short_deadlines(router):
    """64 callers ask for long replies with 1 s deadlines; their generations must not outlive them."""
    def probe() -> float:
        start = time.monotonic()
        asyncio.run(router.chat(ask("default", "Say hi.", max_tokens=8)))
        return time.monotonic() - start

    normal_s = statistics.median(probe() for _ in range(3))

    async def overload():
        calls = [router.chat(ask("default", f"Write a long story number {i}.", max_tokens=1000, timeout_s=1.0))
                 for i in range(64)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(overload())
    assert all(isinstance(o, Exception) for o in outcomes)  # every caller gave up
    end = time.monotonic()
    while probe() > 1.5 * normal_s + 0.1:
        assert time.monotonic() - end < 5.0, "latency not back to normal within 5 s of the overload"
    assert unfinished("default") == 0
