"""What the CLI subcommands do. `run`: validate everything -> Ray -> router -> supervisor -> progress -> run dir."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from controlplane._cli import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from controlplane.errors import MissionNotFound, SpecError
from controlplane._progress import make_progress
from controlplane._report import write_run_dir
from controlplane._spec import MissionSpec, load_mission
from controlplane._validate import check_resources

logger = logging.getLogger(__name__)
LOCAL_MIN_CPUS = 16


def preflight(path: str) -> tuple[MissionSpec, Any]:
    """Load and check the mission and its serving config; nothing is started. Returns (spec, serving config)."""
    from serving import load_serving_config

    spec = load_mission(path)
    serving = load_serving_config(spec.serving)
    known = sorted(serving.models)
    wanted = [(f"agents[{i}]({a.name}).model", a.model) for i, a in enumerate(spec.agents)]
    if spec.plan == "auto":
        wanted.append(("planner.model", spec.planner.model))
    if spec.memory.get("judge_model"):
        wanted.append(("memory.judge_model", spec.memory["judge_model"]))
    for where, model in wanted:
        if model not in known:
            raise SpecError(where=f"{path}: {where}", value=model,
                            why=f"the serving config ({spec.serving or 'serving/default.yaml'}) has no such model; "
                                f"known models: {', '.join(known)}",
                            fix="use a known model, or add it to the serving config named by `serving:`")
    _check_memory_settings(spec, path)
    return spec, serving


def _check_memory_settings(spec: MissionSpec, path: str) -> None:
    from memory import MemoryConfig
    from pydantic import ValidationError

    try:
        MemoryConfig(**{"data_dir": ".", **spec.memory})
    except ValidationError as exc:
        raise SpecError.from_validation(exc, where=f"{path}: memory.",
                                        fix="use the fields of memory.MemoryConfig (see the README)") from None


def _init_ray(address: str | None, verbose: bool) -> bool:
    """Join a cluster (--address or $RAY_ADDRESS) or start a local Ray; True when it started a local one."""
    import ray

    from actors import MISSION_NAMESPACE

    common = {"namespace": MISSION_NAMESPACE, "log_to_driver": verbose,
              "logging_config": ray.LoggingConfig(log_level="INFO")}
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if local:
        ray.init(num_cpus=max(LOCAL_MIN_CPUS, 4 * (os.cpu_count() or 1)), include_dashboard=False, **common)
    else:
        ray.init(address=address, **common)
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    return local


def run_command(args: argparse.Namespace) -> int:
    if args.address or os.environ.get("RAY_ADDRESS"):
        _use_token_auth()
    import ray

    from actors import find_supervisor, follow, new_mission_id, start_mission
    from serving import deploy

    spec, serving = preflight(args.mission)
    local = _init_ray(args.address, args.verbose)
    try:
        resources = ray.cluster_resources()
        check_resources(spec, cluster_gpus=resources.get("GPU", 0.0), cluster_cpus=resources.get("CPU", 0.0),
                        source=args.mission)
        router = deploy(serving, http_port=args.http_port)
        mission_id = args.mission_id or new_mission_id(spec.name)
        memory_dir = str((Path(args.runs_dir) / mission_id / "memory").resolve())
        _record_address(args.runs_dir, mission_id, ray.get_runtime_context().gcs_address)
        print(f"mission {mission_id}: {len(spec.agents)} agents; status: `controlplane status {mission_id}`, "
              f"cancel: `controlplane cancel {mission_id}`", flush=True)
        handle = start_mission(spec, router=router, mission_id=mission_id, memory_config={"data_dir": memory_dir})
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


ADDRESS_FILE = "ray_address"


def _record_address(runs_dir: str, mission_id: str, address: str) -> None:
    """Remember the mission's cluster, so `status` and `cancel` find it even with several clusters about."""
    folder = Path(runs_dir) / mission_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ADDRESS_FILE).write_text(address + "\n")


def _use_token_auth() -> None:
    """Ray 2.60 clusters started by `ray start` or `ray.init()` require the token from Ray's token file;
    a joining client sends it only with RAY_AUTH_MODE=token, read when Ray is imported. Default to that
    when the file exists; call before `import ray`."""
    if (Path.home() / ".ray" / "auth_token").is_file():
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _connect(address: str | None, runs_dir: str, mission_id: str) -> bool:
    """Join the mission's cluster (--address, else the one `run` recorded, else auto); False when none."""
    import ray

    from actors import MISSION_NAMESPACE

    recorded = Path(runs_dir) / mission_id / ADDRESS_FILE
    if address is None and recorded.is_file():
        address = recorded.read_text().strip()
        if not _reachable(address):  # that cluster is gone (a local Ray ends with its `run`)
            return False
    try:
        ray.init(address=address or "auto", namespace=MISSION_NAMESPACE, log_to_driver=False)
    except ConnectionError:
        return False
    return True


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    except (OSError, ValueError):
        return False


def _recorded(runs_dir: str, mission_id: str) -> dict[str, Any] | None:
    path = Path(runs_dir) / mission_id / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _recorded_ids(runs_dir: str) -> list[str]:
    root = Path(runs_dir)
    return sorted(p.name for p in root.iterdir() if (p / "result.json").is_file()) if root.is_dir() else []


def status_command(args: argparse.Namespace) -> int:
    _use_token_auth()
    summary = _recorded_summary(args.runs_dir, args.mission_id) or _live_summary(args)
    print(json.dumps(summary, indent=2) if args.json else _format_summary(summary))
    return EXIT_OK


def _recorded_summary(runs_dir: str, mission_id: str) -> dict[str, Any] | None:
    """The summary of a finished mission from its result.json, or None."""
    recorded = _recorded(runs_dir, mission_id)
    if recorded is None:
        return None
    counts: dict[str, int] = {}
    for task in recorded["tasks"]:
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    return {"mission_id": recorded["mission_id"], "status": recorded["status"], "reason": recorded["reason"],
            "tasks": counts, "busy_agents": {}, "tokens": recorded["usage"]["tokens"],
            "llm_calls": recorded["usage"]["llm_calls"], "elapsed_s": recorded["wall_s"], "done": True}


def _live_summary(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from actors import find_supervisor

    if not _connect(args.address, args.runs_dir, args.mission_id):
        ended = _recorded_summary(args.runs_dir, args.mission_id)  # it may have ended meanwhile
        if ended is not None:
            return ended
        raise MissionNotFound(mission_id=args.mission_id, known=_recorded_ids(args.runs_dir))
    handle = find_supervisor(args.mission_id, recorded=_recorded_ids(args.runs_dir))
    return ray.get(handle.summary.remote())


def _format_summary(s: dict[str, Any]) -> str:
    tasks = ", ".join(f"{n} {state}" for state, n in s["tasks"].items() if n) or "no tasks yet"
    busy = ", ".join(sorted(s["busy_agents"])) or "none"
    reason = f" ({s['reason']})" if s.get("reason") else ""
    return (f"mission {s['mission_id']}: {s['status']}{reason}\n  tasks: {tasks}\n  busy agents: {busy}\n"
            f"  tokens: {s['tokens']} in {s['llm_calls']} model calls; elapsed {s['elapsed_s']:.1f} s")


def cancel_command(args: argparse.Namespace) -> int:
    _use_token_auth()
    import ray

    from actors import find_supervisor

    if not _connect(args.address, args.runs_dir, args.mission_id):
        ended = _recorded_summary(args.runs_dir, args.mission_id)
        if ended is not None:
            print(f"mission {args.mission_id} already ended: {ended['status']}")
            return EXIT_OK
        raise MissionNotFound(mission_id=args.mission_id, known=_recorded_ids(args.runs_dir))
    handle = find_supervisor(args.mission_id, recorded=_recorded_ids(args.runs_dir))
    status = ray.get(handle.cancel.remote("cancelled by `controlplane cancel`"))
    print(f"mission {args.mission_id}: {status}")
    return EXIT_OK
