"""`controlplane status|cancel`: find a mission live on its cluster, or recorded in its run directory."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controlplane._rundir import read_events, read_result, recorded_runs, run_uri
from controlplane.cli._codes import EXIT_OK
from controlplane.cli.connect import connect, not_found


def status_command(args: argparse.Namespace) -> int:
    if getattr(args, "watch", False):
        return _watch(args)
    summary = _recorded_summary(args.runs_dir, args.mission_id) or _live_summary(args)
    print(json.dumps(summary, indent=2) if args.json else _format_summary(summary))
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    """Live: critical path, slowest agent and bottleneck until the mission ends; an ended one: the final ones."""
    from controlplane.cli.watch import live_lines, watch

    run = run_uri(args.runs_dir, args.mission_id)
    recorded = read_result(run)
    if recorded is not None:
        deps = {t["id"]: list(t.get("depends_on") or []) for t in recorded["tasks"] if "id" in t}
        print("\n".join([_format_summary(_summary_of(recorded)), *live_lines(read_events(run), deps, now_s=None)]))
        return EXIT_OK
    from actors import find_supervisor

    if not connect(args.address, args.runs_dir, args.mission_id):
        raise not_found(args.mission_id, args.runs_dir)
    handle = find_supervisor(args.mission_id, recorded=recorded_runs(args.runs_dir))
    watch(handle, _format_summary, interval_s=args.interval)
    return EXIT_OK


def _recorded_summary(runs_dir: str, mission_id: str) -> dict[str, Any] | None:
    """The summary of a finished mission from its result.json, or None."""
    recorded = read_result(run_uri(runs_dir, mission_id))
    return None if recorded is None else _summary_of(recorded)


def _summary_of(recorded: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for task in recorded["tasks"]:
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    return {"mission_id": recorded["mission_id"], "status": recorded["status"], "reason": recorded["reason"],
            "tasks": counts, "busy_agents": {}, "tokens": recorded["usage"]["tokens"],
            "usd": recorded["usage"].get("usd", 0.0), "llm_calls": recorded["usage"]["llm_calls"],
            "elapsed_s": recorded["wall_s"], "done": True}


def _live_summary(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from actors import find_supervisor

    if not connect(args.address, args.runs_dir, args.mission_id):
        ended = _recorded_summary(args.runs_dir, args.mission_id)  # it may have ended meanwhile
        if ended is not None:
            return ended
        raise not_found(args.mission_id, args.runs_dir)
    handle = find_supervisor(args.mission_id, recorded=recorded_runs(args.runs_dir))
    return ray.get(handle.summary.remote())


def _format_summary(s: dict[str, Any]) -> str:
    tasks = (", ".join(f"{n} {state}" for state, n in s["tasks"].items() if n)
             or ("none ran" if s.get("done") else "no tasks yet"))
    busy = ", ".join(sorted(s["busy_agents"])) or "none"
    reason = f" ({s['reason']})" if s.get("reason") else ""
    waiting = s.get("approvals_waiting")
    approvals = f"\n  waiting for approval: {waiting} (`controlplane approvals {s['mission_id']}`)" if waiting else ""
    return (f"mission {s['mission_id']}: {s['status']}{reason}\n  tasks: {tasks}\n  busy agents: {busy}{approvals}\n"
            f"  tokens: {s['tokens']} (${s.get('usd', 0.0):.4f}) in {s['llm_calls']} model calls; "
            f"elapsed {s['elapsed_s']:.1f} s")


def cancel_command(args: argparse.Namespace) -> int:
    import ray

    from actors import find_supervisor

    if not connect(args.address, args.runs_dir, args.mission_id):
        ended = _recorded_summary(args.runs_dir, args.mission_id)
        if ended is not None:
            print(f"mission {args.mission_id} already ended: {ended['status']}")
            return EXIT_OK
        raise not_found(args.mission_id, args.runs_dir)
    handle = find_supervisor(args.mission_id, recorded=recorded_runs(args.runs_dir))
    status = ray.get(handle.cancel.remote("cancelled by `controlplane cancel`"))
    print(f"mission {args.mission_id}: {status}")
    return EXIT_OK
