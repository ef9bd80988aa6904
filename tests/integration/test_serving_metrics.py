"""Accounting is exported as Ray metrics, tagged by mission, agent and model."""

import asyncio

import httpx

from serving import ChatMessage, ChatRequest
from tests.helpers import agent_token, wait_for


def test_usage_reaches_ray_metrics(router):
    import ray

    request = ChatRequest(model="scripted", max_tokens=8, messages=[ChatMessage(role="user", content="one two")],
                          token=agent_token("it-metrics", "counter"))
    asyncio.run(router.chat(request))
    port = ray._private.worker.global_worker.node.metrics_export_port

    def exported():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        lines = [line for line in text.splitlines()
                 if line.startswith("ray_controlplane_router_prompt_tokens") and 'mission_id="it-metrics"' in line]
        return lines

    lines = wait_for(exported, timeout_s=90, interval_s=2, what="the router's metrics")
    assert 'agent_id="counter"' in lines[0] and 'model="scripted"' in lines[0]
    assert float(lines[0].rsplit(" ", 1)[1]) == 2.0
