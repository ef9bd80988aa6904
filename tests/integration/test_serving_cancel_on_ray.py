"""Cancellation reaches the engine: a caller that is cancelled, times out or disconnects ends its
generation on the replica within 1 s (scripted replicas for the mechanism, vLLM for the engine itself),
and after an overload with short deadlines latency is back to normal within 5 s."""

import asyncio
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def call_running_over_http(base_url: str, bearer: dict[str, str]) -> Iterator[httpx.Response]:
    """A streamed call to scripted-hang, held open by its client: yields once the call runs on its replica and the
    router has sent its 200 (the call's first token is 20 s away); the client goes when the block ends."""
    body = {"model": "scripted-hang", "stream": True, "messages": [{"role": "user", "content": "wait"}]}
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, headers=bearer, timeout=30) as response:
        assert response.status_code == 200
        wait_for(lambda: unfinished("scripted-hang") == 1, timeout_s=10, what="the call to run on its replica")
        yield response


def test_an_http_client_that_disconnects_before_the_first_token_ends_its_call(router_base_url, bearer):
    with call_running_over_http(router_base_url, bearer) as response:
        lines = response.iter_lines()  # held: dropping it mid-stream closes the connection
        assert next(lines) == ": waiting for the first token"
    assert seconds_until_idle("scripted-hang") < ABORT_WITHIN_S


def test_an_http_client_that_disconnects_while_serve_reloads_haproxy_ends_its_call(router_base_url, http_port,
                                                                                   bearer):
    """Serve reloads HAProxy when replicas come and go. The HAProxy process it replaces keeps its open connections,
    and notices a client that has closed only when it next writes to it: before the router sent comment lines
    while a first token was due, this call ran to its end (20 s)."""
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    def reload_probe(request) -> str:
        return "ok"

    serving_before = listening_pids(http_port)
    try:
        with call_running_over_http(router_base_url, bearer):
            serve.run(reload_probe.bind(), name="haproxy-reload-probe", route_prefix="/haproxy-reload-probe")
            wait_for(lambda: not listening_pids(http_port) & serving_before, timeout_s=30,
                     what="Serve to replace the HAProxy process that holds the call")
        assert seconds_until_idle("scripted-hang") < ABORT_WITHIN_S
    finally:
        serve.delete("haproxy-reload-probe")


def test_a_disconnected_http_stream_aborts_its_vllm_request(router_base_url, bearer):
    body = {"model": "default", "stream": True, "max_tokens": 1500, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Count to a thousand."}]}
    with httpx.stream("POST", f"{router_base_url}/chat/completions", json=body, headers=bearer,
                      timeout=60) as response:
        lines = response.iter_lines()  # held: dropping it mid-stream closes the connection
        assert '"error"' not in next(line for line in lines if line.startswith("data: "))
        wait_for(lambda: unfinished("default") == 1, timeout_s=10, what="the engine to count the call it generates")
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
