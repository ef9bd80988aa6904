"""Which Serve application a mission's serving config runs in. Pure logic.

A running app is never redeployed with another config while a mission runs (that would swap the models and
limits under it). A different config then joins as a separate app named after its hash, or is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controlplane.errors import SpecError

OnConflict = Literal["separate", "refuse"]


@dataclass(frozen=True, kw_only=True)
class AppChoice:
    """Where to run a serving config, and what to do there."""

    name: str
    """The Serve application name (its route prefix is `/` for the requested name, `/<name>` otherwise)."""
    action: Literal["reuse", "deploy", "redeploy"]
    """reuse: it already runs this config; deploy: no app of that name runs; redeploy: replace an idle app."""
    reason: str
    """One line for the log."""


def config_app_name(base: str, config: Mapping[str, Any]) -> str:
    """`<base>-<8 hex>`: the same config always gets the same name."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return f"{base}-{digest[:8]}"


def choose_app(requested: str, config: Mapping[str, Any], running: Mapping[str, Mapping[str, Any] | None], *,
               missions_running: int, on_conflict: OnConflict = "separate") -> AppChoice:
    """`running` maps app names to the configs their routers run (None: not running)."""
    current = running.get(requested)
    if current is None:
        return AppChoice(name=requested, action="deploy", reason=f"no app {requested!r} runs yet")
    if current == config:
        return AppChoice(name=requested, action="reuse", reason=f"app {requested!r} already runs this config")
    if missions_running == 0:
        return AppChoice(name=requested, action="redeploy",
                         reason=f"app {requested!r} runs another config and no mission uses it")
    if on_conflict == "refuse":
        raise SpecError(where="serving", value=requested,
                        why=f"app {requested!r} runs another serving config under {missions_running} running "
                            "mission(s); redeploying it would change their models and limits",
                        fix="use the serving config of the running app, wait for those missions to end, or let "
                            "the mission join as a separate app (on_conflict='separate')")
    separate = config_app_name(requested, config)
    if running.get(separate) == config:
        return AppChoice(name=separate, action="reuse", reason=f"app {separate!r} already runs this config")
    return AppChoice(name=separate, action="deploy",
                     reason=f"app {requested!r} runs another config under {missions_running} running mission(s); "
                            f"this config joins as app {separate!r}")
