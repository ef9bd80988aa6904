"""Placement checks: refuse a mission the cluster cannot place, before any actor starts."""

from __future__ import annotations

from controlplane.config.mission import MissionSpec
from controlplane.errors import SpecError


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
