"""Cross-field checks of a mission spec: names, references, cycles, and what the cluster can place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controlplane._dag import Dag, format_cycle
from controlplane.errors import SpecError

if TYPE_CHECKING:
    from controlplane._spec import MissionSpec


def check_mission(spec: MissionSpec) -> None:
    """Raise SpecError (where = YAML path) for the first cross-field problem."""
    _check_unique(spec)
    _check_tasks(spec)
    _check_policies(spec)
    if spec.plan == "declared" and not spec.tasks:
        raise SpecError(where="tasks", value=[], why="a mission needs tasks, or `plan: auto`",
                        fix="declare tasks, or set `plan: auto` to let the planner write them")
    if spec.plan == "auto" and spec.tasks:
        raise SpecError(where="plan", value="auto", why=f"`plan: auto` and {len(spec.tasks)} declared tasks "
                        "exclude each other", fix="remove `tasks`, or remove `plan: auto`")
    dag = Dag({t.id: t.depends_on for t in spec.tasks})
    cycle = dag.find_cycle()
    if cycle:
        i = next(i for i, t in enumerate(spec.tasks) if t.id == cycle[0])
        raise SpecError(where=f"tasks[{i}]({cycle[0]}).depends_on", value=format_cycle(cycle),
                        why="the dependencies form a cycle", fix="remove one dependency of the cycle")


def _check_unique(spec: MissionSpec) -> None:
    for field, items, key in (("agents", spec.agents, "name"), ("tasks", spec.tasks, "id")):
        seen: set[str] = set()
        for i, item in enumerate(items):
            value = getattr(item, key)
            if value in seen:
                raise SpecError(where=f"{field}[{i}].{key}", value=value, why=f"the {key} is used twice",
                                fix=f"give each of {field} a unique {key}")
            seen.add(value)


def _check_tasks(spec: MissionSpec) -> None:
    agents = [a.name for a in spec.agents]
    roles = sorted({a.role for a in spec.agents})
    ids = [t.id for t in spec.tasks]
    for i, task in enumerate(spec.tasks):
        at = f"tasks[{i}]({task.id})"
        if task.agent is not None and task.agent not in agents:
            raise _unknown(f"{at}.agent", task.agent, "agent", agents)
        if task.role is not None and task.role not in roles:
            raise _unknown(f"{at}.role", task.role, "role", roles)
        if task.fallback_agent is not None and task.fallback_agent not in agents:
            raise _unknown(f"{at}.fallback_agent", task.fallback_agent, "agent", agents)
        for j, dep in enumerate(task.depends_on):
            if dep == task.id:
                raise SpecError(where=f"{at}.depends_on[{j}]", value=dep, why="a task cannot depend on itself",
                                fix="remove it from depends_on")
            if dep not in ids:
                raise _unknown(f"{at}.depends_on[{j}]", dep, "task", ids)


def _check_policies(spec: MissionSpec) -> None:
    conflicts = spec.policies.conflicts
    agents = [a.name for a in spec.agents]
    roles = sorted({a.role for a in spec.agents})
    where = "policies.conflicts"
    if conflicts.policy == "resolver" and conflicts.resolver_agent is None:
        raise SpecError(where=f"{where}.resolver_agent", value=None, why="policy `resolver` needs an agent",
                        fix=f"set resolver_agent to one of {agents}")
    if conflicts.resolver_agent is not None and conflicts.resolver_agent not in agents:
        raise _unknown(f"{where}.resolver_agent", conflicts.resolver_agent, "agent", agents)
    for i, role in enumerate(conflicts.role_priority):
        if role not in roles:
            raise _unknown(f"{where}.role_priority[{i}]", role, "role", roles)


def _unknown(where: str, value: str, kind: str, known: list[str]) -> SpecError:
    return SpecError(where=where, value=value, why=f"no {kind} has that name; known {kind}s: {', '.join(known)}",
                     fix=f"use one of the known {kind}s, or declare it")


def check_resources(spec: MissionSpec, *, cluster_gpus: float, cluster_cpus: float, source: str = "<mission>") -> None:
    """Refuse a spec the cluster cannot place, before any actor starts."""
    for i, agent in enumerate(spec.agents):
        where = f"{source}: agents[{i}]({agent.name}).resources"
        if agent.resources.num_gpus > cluster_gpus:
            raise SpecError(
                where=f"{where}.num_gpus", value=agent.resources.num_gpus,
                why=f"agent {agent.name!r} asks for num_gpus={agent.resources.num_gpus:g} but the cluster has "
                    f"{cluster_gpus:g} GPUs", fix="lower num_gpus to 0, or start Ray with GPUs "
                    "(cluster.yaml: gpu_worker; locally `ray start --head --num-gpus 1`)")
        if agent.resources.num_cpus > cluster_cpus:
            raise SpecError(where=f"{where}.num_cpus", value=agent.resources.num_cpus,
                            why=f"the cluster has {cluster_cpus:g} CPUs", fix="lower num_cpus")
    gpus = sum(a.resources.num_gpus for a in spec.agents)
    if gpus > cluster_gpus:
        raise SpecError(where=f"{source}: agents[*].resources.num_gpus", value=gpus,
                        why=f"the agents ask for {gpus:g} GPUs together but the cluster has {cluster_gpus:g}",
                        fix="lower the agents' fractional num_gpus so they sum to at most the cluster's GPUs")
