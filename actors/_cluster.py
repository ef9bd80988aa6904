"""What the cluster is and may become, read from Ray for the pure placement checks; and the head pin.

The autoscaler's node types come from its config file: `$CONTROLPLANE_AUTOSCALER_CONFIG`, else the file the
cluster launcher leaves on the head (`~/ray_bootstrap_config.yaml`). Ray keeps no copy a driver can read,
so without that file only the nodes up now count.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray

from controlplane._core.placement import HEAD_RESOURCE, ClusterCapacity, head_pin, node_types_from_config
from controlplane.config._yaml import read_yaml

logger = logging.getLogger(__name__)

AUTOSCALER_CONFIG_ENV = "CONTROLPLANE_AUTOSCALER_CONFIG"
LAUNCHER_CONFIG = Path("~/ray_bootstrap_config.yaml")
RAY_HEAD_MARKER = "node:__internal_head__"
_warned: set[str] = set()


def autoscaler_config_path() -> Path | None:
    """The autoscaler config file of this cluster when one is known; None otherwise."""
    named = os.environ.get(AUTOSCALER_CONFIG_ENV)
    path = Path(named).expanduser() if named else LAUNCHER_CONFIG.expanduser()
    if not path.is_file():
        if named:
            logger.warning("$%s names %s, which does not exist; counting only the nodes up now",
                           AUTOSCALER_CONFIG_ENV, path)
        return None
    return path


def read_capacity() -> ClusterCapacity:
    """The nodes alive now, plus the node types the autoscaler may add (when its config is known)."""
    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    path = autoscaler_config_path()
    if path is None:
        return ClusterCapacity(nodes=nodes)
    heads = [n for n in nodes if n.get(RAY_HEAD_MARKER)]
    node_types = node_types_from_config(read_yaml(path, expected="a Ray autoscaler config"), source=str(path))
    return ClusterCapacity(nodes=nodes, fixed=heads, node_types=node_types)


def head_options(what: str) -> dict[str, Any]:
    """Ray actor options that put `what` (supervisor, memory, router) on the head; {} when no node declares
    the head resource, with a warning the first time."""
    pin = head_pin(ray.cluster_resources())
    if not pin and what not in _warned:
        _warned.add(what)
        logger.warning("no node declares the custom resource %r, so the %s may run on any node; declare it on "
                       "the head (`ray start --head --resources='{\"%s\": 1}'`, cluster.yaml does)",
                       HEAD_RESOURCE, what, HEAD_RESOURCE)
    return {"resources": pin} if pin else {}
