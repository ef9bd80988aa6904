"""`reserve_engine_cores` on the real stack: a vLLM replica on CPU keeps its Ray node's processes (the raylet, GCS,
Serve, the other replicas, later actors) off the cores vLLM bound its worker to, and the worker keeps them."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest
import ray
from ray import serve

from controlplane.config import ServingConfig
from serving import ChatMessage, ChatRequest
from serving._engine_cores import ENGINE_WORKER, node_processes
from tests.helpers import actor_processes, agent_token, wait_for

CORES = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
APP = "cores-app"
pytestmark = pytest.mark.skipif(len(CORES) < 2, reason="vLLM's CPU worker takes every core of a 1-core machine")


def replica_of(app: str) -> psutil.Process:
    replicas = actor_processes(f"ray::ServeReplica:{app}:vllm:default")
    assert len(replicas) == 1, replicas
    return replicas[0]


def threads_of(pid: int) -> list[int]:
    """The process's thread ids; none once it has ended."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def thread_cores(proc: psutil.Process) -> set[frozenset[int]]:
    found = set()
    for tid in threads_of(proc.pid):
        try:
            found.add(frozenset(os.sched_getaffinity(tid)))
        except OSError:  # the thread ended meanwhile
            continue
    return found


@pytest.fixture
def reserving_replica(router, http_port):
    """A second vLLM app whose model reserves its worker's cores; afterwards every core is the node's again."""
    from serving import deploy

    config = {"router": {"request_timeout_s": 60},
              "models": {"default": {"kind": "vllm", "max_context_tokens": 512, "kv_cache_space_gb": 1,
                                     "replicas": {"num_cpus": 1}, "reserve_engine_cores": True}}}
    client = deploy(ServingConfig.model_validate(config), app_name=APP, http_port=http_port, route_prefix=f"/{APP}")
    raylet = replica_of(APP).parent()
    try:
        yield client, raylet
    finally:
        serve.delete(APP)
        for proc in node_processes(raylet.pid):
            for tid in threads_of(proc.pid):
                try:
                    os.sched_setaffinity(tid, CORES)
                except OSError:
                    continue


@ray.remote(num_cpus=0)
class CoresOf:
    def get(self) -> list[int]:
        return sorted(os.sched_getaffinity(0))


def test_a_replica_that_reserves_its_engine_cores_keeps_the_node_off_them_until_it_stops(reserving_replica):
    client, raylet = reserving_replica
    replica = replica_of(APP)
    workers = [p for p in replica.children(recursive=True) if p.name() == ENGINE_WORKER]
    assert len(workers) == 1
    engine_cores = set(workers[0].cpu_affinity())
    assert engine_cores and engine_cores < CORES  # vLLM leaves at least one core to the rest
    rest = frozenset(CORES - engine_cores)

    node = {p.pid: p for p in node_processes(raylet.pid)}
    names = {p.name() for p in node.values()}
    assert {"raylet", "gcs_server", "VLLM::EngineCore"} <= names, names
    assert any(p.cmdline()[0].startswith("ray::ProxyActor") for p in node.values() if p.cmdline())
    for proc in node.values():
        if proc.name() == ENGINE_WORKER:
            continue  # this replica's worker, and the session replica's, which keeps its own binding
        assert all(cores <= rest for cores in thread_cores(proc)), (proc.name(), proc.cmdline()[:1])
    assert thread_cores(workers[0]) >= {frozenset(engine_cores)}

    actor = CoresOf.remote()  # a Ray worker started afterwards inherits the raylet's cores
    assert set(ray.get(actor.get.remote())) == set(rest)
    ray.kill(actor)

    request = ChatRequest(model="default", messages=[ChatMessage(role="user", content="Say hi.")], max_tokens=4,
                          token=agent_token("it-engine-cores", "tester"))
    assert asyncio.run(client.chat(request)).usage.completion_tokens >= 1  # the engine serves from its cores

    serve.delete(APP)  # the replica stops and gives the node its cores back
    wait_for(lambda: thread_cores(raylet) == {frozenset(CORES)}, timeout_s=30, what="the raylet's cores back")
