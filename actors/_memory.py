"""The mission's memory actor, started by its supervisor."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from actors._cluster import head_options
from actors._names import MISSION_NAMESPACE
from controlplane._core.tools import allowed
from controlplane.config import MissionSpec


def memory_needed(spec: MissionSpec) -> bool:
    """Some agent may use memory (a memory tool on its allow-list, or fixed recall), or contradictions are judged."""
    return spec.memory.judge_model is not None or any(
        a.fixed_memory or any(allowed(a.tools, name) for name in ("memory.search", "memory.post"))
        for a in spec.agents)


def start_memory(spec: MissionSpec, mission_id: str, memory_dir: str | None, secret_files: dict[str, str] | None,
                 app_name: str | None = None) -> Any:
    """The mission's memory actor, on the head when it declares the head resource. Its data lives where the spec
    says (on a multi-node cluster: a path or fsspec URL every node sees), else in `memory_dir` (the run
    directory's `memory/`, on the driver's node), else in a temporary directory. It verifies tokens with the
    root secret file that `secret_files` names: the driver's, where the mission key was derived (None: this
    process's)."""
    from memory import start_memory_actor

    data_dir = (spec.memory.data_dir or memory_dir
                or str(Path(tempfile.gettempdir()) / "controlplane-memory" / mission_id))
    update = {"data_dir": data_dir, **({"app_name": app_name} if app_name else {})}  # the mission's router app
    return start_memory_actor(spec.memory.model_copy(update=update), mission_id=mission_id,
                              namespace=MISSION_NAMESPACE, resources=head_options("memory actor").get("resources"),
                              secret_files=secret_files)
