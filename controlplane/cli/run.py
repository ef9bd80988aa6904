"""`controlplane run`: validate everything -> Ray -> router -> supervisor -> progress -> run dir."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from controlplane.cli._codes import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from controlplane.cli.connect import init_ray, record_address, use_token_auth
from controlplane.cli.progress import make_progress
from controlplane.cli.report import write_run_dir
from controlplane.config import MissionSpec, load_mission
from controlplane.errors import SpecError

logger = logging.getLogger(__name__)


def preflight(path: str) -> tuple[MissionSpec, Any]:
    """Load and check the mission and its serving config; nothing is started. Returns (spec, serving config)."""
    from serving import load_serving_config

    spec = load_mission(path)
    serving = load_serving_config(spec.serving)
    known = sorted(serving.models)
    wanted = [(f"agents[{i}]({a.name}).model", a.model) for i, a in enumerate(spec.agents)]
    if spec.plan == "auto":
        wanted.append(("planner.model", spec.planner.model))
    if spec.memory.judge_model:
        wanted.append(("memory.judge_model", spec.memory.judge_model))
    for where, model in wanted:
        if model not in known:
            raise SpecError(where=f"{path}: {where}", value=model,
                            why=f"the serving config ({spec.serving or 'serving/default.yaml'}) has no such model; "
                                f"known models: {', '.join(known)}",
                            fix="use a known model, or add it to the serving config named by `serving:`")
    return spec, serving


def run_command(args: argparse.Namespace) -> int:
    if args.address or os.environ.get("RAY_ADDRESS"):
        use_token_auth()
    import ray

    from actors import find_supervisor, follow, new_mission_id, running_missions, start_mission
    from serving import deploy

    spec, serving = preflight(args.mission)
    local = init_ray(args.address, args.verbose)
    try:
        router = deploy(serving, http_port=args.http_port, missions_running=len(running_missions()))
        if router.app_name != "controlplane":
            print(f"serving: another config runs under other missions; this one runs as app {router.app_name!r}",
                  flush=True)
        mission_id = args.mission_id or new_mission_id(spec.name)
        memory_dir = str((Path(args.runs_dir) / mission_id / "memory").resolve())
        record_address(args.runs_dir, mission_id, ray.get_runtime_context().gcs_address)
        print(f"mission {mission_id}: {len(spec.agents)} agents; status: `controlplane status {mission_id}`, "
              f"cancel: `controlplane cancel {mission_id}`", flush=True)
        handle = start_mission(spec, router=router, mission_id=mission_id, memory_dir=memory_dir)
        try:
            with make_progress(f"mission {mission_id}", tty=False if args.plain else None) as progress:
                result = follow(handle, progress.update)
        except KeyboardInterrupt:
            print("interrupted: cancelling the mission", flush=True)
            ray.get(find_supervisor(mission_id).cancel.remote("interrupted by the driver (Ctrl-C)"))
            result = follow(handle)
        events = result.pop("events")
        out = write_run_dir(args.runs_dir, result, events)
        ray.kill(handle)
    finally:
        if local:
            ray.shutdown()
    print(f"mission {mission_id} {result['status']}"
          f"{': ' + result['reason'] if result['reason'] else ''}; "
          f"{result['usage']['tokens']} tokens in {result['usage']['llm_calls']} model calls, "
          f"{result['wall_s']:.1f} s; wrote {out}/", flush=True)
    return {"succeeded": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(result["status"], EXIT_FAILED)
