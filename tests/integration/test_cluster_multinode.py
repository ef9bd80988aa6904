"""Many nodes on one machine: a head and three worker raylets (`ray.cluster_utils.Cluster`, 2 CPUs each).

- the supervisor, the router, its budget book and the memory actor land on the head (custom resource
  `controlplane_head`);
  agents spread over the nodes;
- a mission's agents are reserved together: one that cannot be placed waits (no agent starts), then starts
  once the resources free up, or fails after placement.timeout_s naming what is missing;
- a worker removed mid-mission: Ray recreates its agent on another node (in its bundle), the attempt is
  retried, the agent's other tasks wait for it, and the mission completes.

This module runs its own Ray cluster, so it needs a driver that has not joined Ray yet: the integration
conftest runs it before every other test of the session, and it is skipped where Ray was joined anyway.
"""

from __future__ import annotations

import pytest
import ray

from tests.helpers import free_port, wait_for

HEAD_CPUS = WORKER_CPUS = 2
WORKERS = 3
SERVING = {"router": {"request_timeout_s": 60, "agent": {"max_in_flight": 64}},
           "models": {"scripted": {"kind": "scripted"}, "scripted-slow": {"kind": "scripted", "latency_s": 1.5}}}


@pytest.fixture(scope="module")
def cluster(secret_files):  # the session's root secret, set before the nodes start (they verify tokens with it)
    from ray import serve
    from ray.cluster_utils import Cluster

    from actors import MISSION_NAMESPACE
    from controlplane._core.placement import HEAD_RESOURCE
    from controlplane.config import ServingConfig
    from serving import deploy

    if ray.is_initialized():
        pytest.skip("another test module already joined Ray; run this module on its own: "
                    "pytest tests/integration/test_cluster_multinode.py")
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": HEAD_CPUS, "resources": {HEAD_RESOURCE: 1}, "include_dashboard": False})
    try:
        ray.init(address=nodes.address, namespace=MISSION_NAMESPACE, log_to_driver=False)
        # Serve comes up while the head is the only node, so its replicas cannot sit on a worker a test removes.
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        router = deploy(ServingConfig.model_validate(SERVING), app_name="controlplane", http_port=port)
        for _ in range(WORKERS):
            nodes.add_node(num_cpus=WORKER_CPUS)
        nodes.wait_for_nodes()
        yield nodes, router
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        nodes.shutdown()


def _head_id() -> str:
    return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("node:__internal_head__"))


def _actor_nodes(*, ended_too: bool = False) -> dict[str, str]:
    """Live actors' names -> node ids, from the GCS (no dashboard needed); `ended_too`: also the actors that have
    ended, where they ran."""
    return {a["Name"]: a["Address"]["NodeID"] for a in ray._private.state.actors().values()
            if (ended_too or a["State"] == "ALIVE") and a["Name"]}


def _spec(name: str, agents: list[dict], tasks: list[dict], **extra):
    from controlplane import parse_mission

    return parse_mission({"name": name, "goal": "test placement", "agents": agents, "tasks": tasks, **extra})


def _agents(n: int, *, cpus: float, model: str = "scripted", **extra) -> list[dict]:
    return [{"name": f"a{i}", "role": "worker", "model": model, "resources": {"num_cpus": cpus}, **extra}
            for i in range(n)]


def test_control_plane_on_the_head_agents_spread_over_the_nodes(cluster):
    from actors import follow, start_mission

    _, router = cluster
    spec = _spec("spread", _agents(3, cpus=1, tools=["memory.post", "memory.search"]),
                 [{"id": f"t{i}", "agent": f"a{i}", "description": f"step {i}"} for i in range(3)],
                 budgets={"max_tokens": 100_000})  # a cap: the router starts its app's budget book
    handle = start_mission(spec, router=router, mission_id="spread-1")
    try:
        result = follow(handle, timeout_s=180)
    finally:
        ray.kill(handle)
    where = _actor_nodes(ended_too=True)  # the mission's memory actor has ended with it
    assert result["status"] == "succeeded", result["reason"]
    head = _head_id()
    router_nodes = {node for name, node in where.items() if "Router" in name}
    assert where["spread-1"] == head and where["spread-1:memory"] == head and router_nodes == {head}
    assert where["controlplane:budgets"] == head
    assert len({a["node_id"] for a in result["agents"].values()}) >= 2  # SPREAD: not all on one node


def test_a_mission_that_cannot_be_placed_waits_whole_then_starts_when_resources_free(cluster):
    from actors import follow, start_mission

    _, router = cluster
    blocker = _Blocker.options(num_cpus=WORKER_CPUS).remote()  # holds one whole node
    ray.get(blocker.ready.remote())
    spec = _spec("gang", _agents(4, cpus=2), [{"id": f"t{i}", "agent": f"a{i}", "description": "d"}
                                             for i in range(4)],
                 placement={"strategy": "STRICT_SPREAD", "timeout_s": 120})
    handle = start_mission(spec, router=router, mission_id="gang-1")
    try:
        waiting = wait_for(lambda: [e for e in ray.get(handle.events_since.remote(0)) if e["status"] == "waiting"],
                           timeout_s=30, what="a waiting message")
        assert "do not fit" in waiting[0]["message"] and "CPU" in waiting[0]["message"]
        assert not [n for n in _actor_nodes() if n.startswith("gang-1:")]  # no agent started: never half-started
        ray.kill(blocker)
        result = follow(handle, timeout_s=180)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    assert len({a["node_id"] for a in result["agents"].values()}) == 4  # STRICT_SPREAD: one agent per node


def test_a_mission_that_stays_unplaceable_fails_after_its_timeout_naming_what_is_missing(cluster):
    from actors import follow, start_mission

    _, router = cluster
    blocker = _Blocker.options(num_cpus=WORKER_CPUS).remote()
    ray.get(blocker.ready.remote())
    spec = _spec("late", _agents(4, cpus=2), [{"id": "t", "role": "worker", "description": "d"}],
                 placement={"strategy": "STRICT_SPREAD", "timeout_s": 4})
    handle = start_mission(spec, router=router, mission_id="late-1")
    try:
        result = follow(handle, timeout_s=60)
    finally:
        ray.kill(handle)
        ray.kill(blocker)
    assert result["status"] == "failed"
    assert "PlacementTimeout" in result["reason"] and "placement.timeout_s=4" in result["reason"]
    assert "CPU: 8 wanted, 6 free" in result["reason"]
    assert result["agents"] == {}  # no agent started
    groups = [g for g in ray.util.placement_group_table().values() if g["name"] == "late-1:agents"]
    assert groups and all(g["state"] == "REMOVED" for g in groups)  # and nothing stays reserved


def test_a_worker_removed_mid_mission_its_agent_is_recreated_elsewhere_and_the_mission_completes(cluster):
    from actors import follow, start_mission

    nodes, router = cluster
    # Each agent has tasks of its own, so the lost agent's tasks wait for its replacement (no new task goes to
    # it while Ray restarts it: sent there, they would fail at once and use up their retries).
    spec = _spec("lose", _agents(3, cpus=1, model="scripted-slow"),
                 [{"id": f"t{i}", "agent": f"a{i % 3}", "description": f"step {i}", "retries": 2} for i in range(12)],
                 policies={"retry_backoff_s": 0.2})
    handle = start_mission(spec, router=router, mission_id="lose-1")
    try:
        result_so_far = wait_for(lambda: _running_on_worker(handle), timeout_s=120, what="a task on a worker")
        lost_agent, lost_node = result_so_far
        victim = next(n for n in nodes.worker_nodes if n.node_id == lost_node)
        nodes.remove_node(victim)
        result = follow(handle, timeout_s=300)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    assert all(t["status"] == "succeeded" for t in result["tasks"])
    replaced = [e for e in result["events"] if e["kind"] == "agent" and e["status"] == "replaced"]
    assert replaced and replaced[0]["agent"] == lost_agent
    assert result["agents"][lost_agent]["node_id"] != lost_node


def _running_on_worker(handle) -> tuple[str, str] | None:
    """(agent, node) of an agent on a worker node that is running a task now, if any."""
    summary = ray.get(handle.summary.remote())
    placed = ray.get(handle.result.remote())["agents"]
    head = _head_id()
    for agent in summary["busy_agents"]:
        node = placed.get(agent, {}).get("node_id")
        if node and node != head:
            return agent, node
    return None


@ray.remote
class _Blocker:
    """Holds its CPUs until killed."""

    def ready(self) -> bool:
        return True
