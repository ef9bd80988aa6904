"""Placement decisions: what a cluster can hold once its autoscaler has added every node it may, how a
mission's agents are reserved together, and what is missing when they cannot be. Pure logic, no Ray.

The pre-flight check refuses only what no scale-up could satisfy: each agent must fit on ONE node (a node
up now, or a node type the autoscaler may add), and the agents together must fit in the largest cluster
the autoscaler may grow to (the nodes it does not manage, plus every worker type at `max_workers`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt, ValidationError

from controlplane.config.mission import MissionSpec
from controlplane.errors import SpecError

HEAD_RESOURCE = "controlplane_head"
"""Custom resource the head node declares (`controlplane_head: 1`); the supervisor, router and memory actor
ask for a sliver of it, so they land on the head."""
HEAD_SHARE = 0.001
"""What one control-plane actor asks of HEAD_RESOURCE: a thousand of them fit on one head."""
Bundle = dict[str, float]


@dataclass(frozen=True, kw_only=True)
class NodeType:
    """A node type of the autoscaler's config."""

    name: str
    """Its key under `available_node_types`."""
    resources: Mapping[str, float]
    """What one node of this type offers (CPU, GPU, custom resources)."""
    max_workers: int
    """Most nodes of this type the autoscaler may run at once (those up now included)."""


@dataclass(frozen=True, kw_only=True)
class ClusterCapacity:
    """The resources a mission may count on: what is up now, and what the autoscaler may add."""

    nodes: Sequence[Mapping[str, float]]
    """Total resources of each node alive now."""
    fixed: Sequence[Mapping[str, float]] = ()
    """Nodes the autoscaler neither adds nor removes (the head). Used only with `node_types`."""
    node_types: Sequence[NodeType] = ()
    """Worker types the autoscaler may add; empty when there is no autoscaler (the cluster is what is up)."""

    def total(self, resource: str) -> float:
        """The most of `resource` the cluster may have at once."""
        now = sum(n.get(resource, 0.0) for n in self.nodes)
        if not self.node_types:
            return now
        scaled = (sum(n.get(resource, 0.0) for n in self.fixed)
                  + sum(t.resources.get(resource, 0.0) * t.max_workers for t in self.node_types))
        return max(now, scaled)

    def max_nodes(self) -> int:
        """The most nodes the cluster may have at once (STRICT_SPREAD puts each bundle on its own node)."""
        scaled = len(self.fixed) + sum(t.max_workers for t in self.node_types)
        return max(len(self.nodes), scaled) if self.node_types else len(self.nodes)

    def shapes(self) -> list[Mapping[str, float]]:
        """Every node shape an agent may land on: the nodes up now and the types the autoscaler may add."""
        return [*self.nodes, *self.fixed, *(t.resources for t in self.node_types if t.max_workers > 0)]

    def describe(self) -> str:
        gpus, cpus = self.total("GPU"), self.total("CPU")
        scaling = f" after scaling up ({', '.join(f'{t.name} x{t.max_workers}' for t in self.node_types)})" \
            if self.node_types else " (no autoscaler)"
        return f"{gpus:g} GPUs and {cpus:g} CPUs{scaling}"


_NODE_TYPES_FORMAT = ("the Ray autoscaler's format: `available_node_types: {<type>: {resources: {CPU: 4, GPU: 1}, "
                      "max_workers: 2}}`, whole numbers for `max_workers`")


class _AutoscalerNodeType(BaseModel):
    model_config = ConfigDict(extra="ignore")
    resources: dict[str, NonNegativeFloat] | None = None
    max_workers: NonNegativeInt | None = None


class _AutoscalerConfig(BaseModel):
    """The parts of a Ray autoscaler config the pre-flight check reads; the rest is the autoscaler's."""

    model_config = ConfigDict(extra="ignore")
    available_node_types: dict[str, _AutoscalerNodeType] | None = None
    head_node_type: str | None = None
    max_workers: NonNegativeInt | None = None


def node_types_from_config(config: Any, *, source: str = "<autoscaler config>") -> list[NodeType]:
    """The worker types of a Ray autoscaler config (`available_node_types`, head type left out), each capped
    by the config's cluster-wide `max_workers`. SpecError, naming `source` and the field, when a part it
    reads is not in Ray's format."""
    if not isinstance(config, Mapping):
        raise SpecError(where=source, value=config, why="an autoscaler config is a YAML mapping",
                        fix=f"point $CONTROLPLANE_AUTOSCALER_CONFIG at a file in {_NODE_TYPES_FORMAT}")
    try:
        parsed = _AutoscalerConfig.model_validate(config)
    except ValidationError as exc:
        raise SpecError.from_validation(exc, where=f"{source}: ", fix=f"write it in {_NODE_TYPES_FORMAT}",
                                        data=config, model=_AutoscalerConfig) from None
    out, cap = [], parsed.max_workers
    for name, node in sorted((parsed.available_node_types or {}).items()):
        if name == parsed.head_node_type:
            continue
        most = node.max_workers if node.max_workers is not None else (cap or 0)
        out.append(NodeType(name=name, resources=dict(node.resources or {}),
                            max_workers=most if cap is None else min(most, cap)))
    return out


def agent_bundle(num_cpus: float, num_gpus: float) -> Bundle:
    """The placement-group bundle of one agent; empty when it asks for nothing."""
    return {k: v for k, v in (("CPU", num_cpus), ("GPU", num_gpus)) if v > 0}


def agent_bundles(spec: MissionSpec) -> dict[str, Bundle]:
    """Agent name -> bundle, for the agents that ask for resources (the others need no reservation)."""
    bundles = {a.name: agent_bundle(a.resources.num_cpus, a.resources.num_gpus) for a in spec.agents}
    return {name: bundle for name, bundle in bundles.items() if bundle}


def check_resources(spec: MissionSpec, capacity: ClusterCapacity, *, source: str = "<mission>") -> None:
    """Refuse a spec that no scale-up could place, before any actor starts: one SpecError that names every
    agent and resource that cannot be placed."""
    problems = list(_resource_problems(spec, capacity, source))
    if problems:
        raise SpecError.of(problems)


def _resource_problems(spec: MissionSpec, capacity: ClusterCapacity, source: str) -> Iterator[SpecError]:
    shapes = capacity.shapes()
    for i, agent in enumerate(spec.agents):
        where = f"{source}: agents[{i}]({agent.name}).resources"
        for field, resource in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
            want = getattr(agent.resources, field)
            largest = max((s.get(resource, 0.0) for s in shapes), default=0.0)
            if want > largest:
                yield SpecError(
                    where=f"{where}.{field}", value=want,
                    why=f"agent {agent.name!r} asks for {field}={want:g} but no node has more than {largest:g} "
                        f"{resource}s (one agent must fit on one node); the cluster has {capacity.describe()}",
                    fix=f"lower {field}, or add a node type with {resource}: {want:g} to the autoscaler config "
                        "(cluster.yaml: available_node_types; locally `ray start --head --num-gpus 1`)")
    for field, resource in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
        want = sum(getattr(a.resources, field) for a in spec.agents)
        have = capacity.total(resource)
        if want > have + 1e-9:
            yield SpecError(where=f"{source}: agents[*].resources.{field}", value=want,
                            why=f"the agents ask for {want:g} {resource}s together but the cluster has "
                                f"{capacity.describe()}",
                            fix=f"lower the agents' {field} so they sum to at most {have:g}, or raise max_workers "
                                "of a node type with that resource")
    reserved = len(agent_bundles(spec))
    if spec.placement.strategy == "STRICT_SPREAD" and reserved > capacity.max_nodes():
        yield SpecError(where=f"{source}: placement.strategy", value="STRICT_SPREAD",
                        why=f"it puts each of the {reserved} agents that reserve resources on its own node, but the "
                            f"cluster has at most {capacity.max_nodes()} nodes",
                        fix="use SPREAD (best effort) or PACK, or allow more nodes")


def head_pin(cluster_resources: Mapping[str, float]) -> dict[str, float]:
    """The `resources=` option that puts a control-plane actor on the head; {} when no node declares it."""
    return {HEAD_RESOURCE: HEAD_SHARE} if cluster_resources.get(HEAD_RESOURCE, 0.0) > 0 else {}


def missing_for(bundles: Sequence[Mapping[str, float]], available: Sequence[Mapping[str, float]],
                strategy: str) -> str:
    """Why `bundles` cannot be placed on nodes with `available` free resources now: a one-line account that
    names each resource short. Greedy first-fit, largest bundles first (a reservation's own order may differ,
    so an empty answer means "it should fit", not a promise)."""
    free = [dict(node) for node in available]
    unplaced: list[Mapping[str, float]] = []
    used_nodes: set[int] = set()
    for bundle in sorted(bundles, key=lambda b: (-b.get("GPU", 0.0), -b.get("CPU", 0.0))):
        node = _first_fit(bundle, free, skip=used_nodes if strategy == "STRICT_SPREAD" else set())
        if node is None:
            unplaced.append(bundle)
            continue
        used_nodes.add(node)
        for key, amount in bundle.items():
            free[node][key] = free[node].get(key, 0.0) - amount
    if not unplaced:
        return ""
    short = []
    for resource in sorted({k for b in unplaced for k in b}):
        need = sum(b.get(resource, 0.0) for b in bundles)
        have = sum(node.get(resource, 0.0) for node in available)
        short.append(f"{resource}: {need:g} wanted, {have:g} free")
    nodes = f"; {strategy} needs {len(bundles)} nodes, {len(available)} are up" \
        if strategy == "STRICT_SPREAD" and len(bundles) > len(available) else ""
    return f"{len(unplaced)} of {len(bundles)} agent bundles do not fit ({', '.join(short)}{nodes})"


def _first_fit(bundle: Mapping[str, float], free: list[dict[str, float]], *, skip: set[int]) -> int | None:
    for index, node in enumerate(free):
        if index not in skip and all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()):
            return index
    return None
