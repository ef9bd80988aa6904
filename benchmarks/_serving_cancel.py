"""bench_serving's cancellation figures: how soon a cancelled or disconnected call leaves vLLM's engine,
and how soon latency is normal again after an overload of callers with short deadlines."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx

from benchmarks._serving_load import agent_tokens

LONG_TOKENS = 1500


async def _engine_idle_s(replica, start: float, timeout_s: float = 30, others: int = 0) -> float:
    """Seconds from `start` until the replica's engine runs no more than `others` requests."""
    while await replica.unfinished_calls.remote() > others:
        if time.perf_counter() - start > timeout_s:
            return float("inf")
        await asyncio.sleep(0.01)
    return time.perf_counter() - start


def _long_request(index: int, **fields):
    from serving import ChatMessage, ChatRequest

    return ChatRequest(model="default", max_tokens=LONG_TOKENS, ignore_eos=True,
                       messages=[ChatMessage(role="user", content=f"Tell a very long story, number {index}.")],
                       token=agent_tokens("bench-cancel")[index % 64], **fields)


async def _cancel_handle_stream(client, replica, index: int) -> float:
    stream = client.stream(_long_request(index))
    await anext(stream)  # the engine is generating
    start = time.perf_counter()
    await stream.aclose()
    return await _engine_idle_s(replica, start)


async def _disconnect_http(base_url: str, replica, index: int) -> float:
    body = {"model": "default", "stream": True, "max_tokens": LONG_TOKENS, "ignore_eos": True,
            "messages": [{"role": "user", "content": f"Tell a very long story, number {index}."}]}
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", f"{base_url}/chat/completions", json=body,
                               headers={"authorization": f"Bearer {agent_tokens('bench-cancel')[index % 64]}"}
                               ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break
            start = time.perf_counter()
    return await _engine_idle_s(replica, start)


async def cancel_to_abort(client, replica, base_url: str, *, trials: int) -> dict[str, float]:
    """Half the trials close a handle-API stream, half disconnect an HTTP stream, each after its first token."""
    times = []
    for index in range(trials):
        if index % 2:
            times.append(await _disconnect_http(base_url, replica, index))
        else:
            times.append(await _cancel_handle_stream(client, replica, index))
    times.sort()
    return {"cancel_to_engine_abort_s_p50": statistics.median(times),
            "cancel_to_engine_abort_s_p95": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
            "cancel_trials": trials}


async def _probe(client) -> float:
    from serving import ChatMessage, ChatRequest

    request = ChatRequest(model="default", max_tokens=8, token=agent_tokens("bench-probe", 1)[0],
                          messages=[ChatMessage(role="user", content="Say hi.")])
    start = time.perf_counter()
    await client.chat(request)
    return time.perf_counter() - start


async def overload_recovery(client, replica, *, callers: int = 64, deadline_s: float = 1.0) -> dict[str, float]:
    """`callers` ask for long replies with `deadline_s` deadlines; every one times out. Recovery: from the
    last timeout until a probe's latency is back within 1.5x (+0.1 s) of its median before the overload."""
    normal_s = statistics.median([await _probe(client) for _ in range(3)])
    outcomes = await asyncio.gather(*[client.chat(_long_request(i, timeout_s=deadline_s)) for i in range(callers)],
                                    return_exceptions=True)
    end = time.perf_counter()
    engine_idle_s = asyncio.create_task(_engine_idle_s(replica, end, others=1))  # 1: a probe
    recovered_s = float("inf")
    while time.perf_counter() - end < 30:
        latency_s = await _probe(client)
        if latency_s <= 1.5 * normal_s + 0.1:
            recovered_s = time.perf_counter() - end
            break
    return {"overload_recovery_s": recovered_s, "overload_engine_idle_s": await engine_idle_s,
            "overload_timed_out": sum(isinstance(o, Exception) for o in outcomes), "overload_callers": callers,
            "probe_normal_s": normal_s}
