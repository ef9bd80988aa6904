"""The run directory: result.json (state of every task), events.jsonl (every transition), report.md,
report.html (the timeline, critical path and bottleneck; `controlplane report RUN` renders it again), and
traces.jsonl (the mission's spans, written by its actors and the router as it runs)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane._core.prompts import as_text
from controlplane._core.report_html import render_report_html
from controlplane.cli._codes import EXIT_OK
from controlplane.errors import MissionNotFound

OUTPUT_CHARS_IN_REPORT = 400
RESULT_FILE, EVENTS_FILE, REPORT_HTML, TRACES_FILE = "result.json", "events.jsonl", "report.html", "traces.jsonl"


def write_run_dir(runs_dir: str | Path, result: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> Path:
    """Write `<runs_dir>/<mission_id>/{result.json, events.jsonl, report.md, report.html}`; return the folder."""
    out = Path(runs_dir) / str(result["mission_id"])
    out.mkdir(parents=True, exist_ok=True)
    events = list(events)
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str) + "\n")
    with (out / EVENTS_FILE).open("w") as fh:
        for event in events:
            fh.write(json.dumps(event, default=str) + "\n")
    (out / "report.md").write_text(render_report(result))
    write_report_html(out, result, events)
    return out


def write_report_html(folder: Path, result: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> Path:
    path = folder / REPORT_HTML
    path.write_text(render_report_html(result, events))
    return path


def run_dir_of(run: str, runs_dir: str) -> Path:
    """A run directory from a path to one, or a mission id under `runs_dir`; MissionNotFound otherwise."""
    for folder in (Path(run), Path(runs_dir) / run):
        if (folder / RESULT_FILE).is_file() and (folder / EVENTS_FILE).is_file():
            return folder
    root = Path(runs_dir)
    known = sorted(p.name for p in root.iterdir() if (p / RESULT_FILE).is_file()) if root.is_dir() else []
    raise MissionNotFound(mission_id=run, known=known)


def read_run_dir(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """result.json and events.jsonl of a run directory."""
    events = [json.loads(line) for line in (folder / EVENTS_FILE).read_text().splitlines() if line.strip()]
    return json.loads((folder / RESULT_FILE).read_text()), events


def report_command(args: argparse.Namespace) -> int:
    """`controlplane report RUN`: render report.html again from the run directory's result and events."""
    folder = run_dir_of(args.run, args.runs_dir)
    result, events = read_run_dir(folder)
    path = write_report_html(folder, result, events)
    print(f"wrote {path}")
    return EXIT_OK


def per_agent(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Tokens, tasks and busy seconds per agent, from the task records."""
    agents: dict[str, dict[str, float]] = {}
    for task in result["tasks"]:
        if task["agent"] is None:
            continue
        row = agents.setdefault(task["agent"], {"tasks": 0, "tokens": 0, "busy_s": 0.0})
        row["tasks"] += 1
        row["tokens"] += task["tokens"]["prompt"] + task["tokens"]["completion"]
        if task["started_at"] is not None and task["ended_at"] is not None:
            row["busy_s"] += task["ended_at"] - task["started_at"]
    return agents


def render_report(result: Mapping[str, Any]) -> str:
    """A readable summary: status, per-agent tokens and time, each task's outcome, conflicts, plan repairs."""
    lines = [f"# Mission {result['mission_id']}", "",
             f"- **Goal:** {result['goal']}",
             f"- **Status:** {result['status']} ({result.get('reason') or 'all tasks done'})",
             f"- **Wall time:** {result.get('wall_s', 0):.1f} s",
             f"- **Tokens:** {result['usage']['tokens']} in {result['usage']['llm_calls']} model calls "
             f"(control plane: {result['control_plane']['tokens']} tokens in {result['control_plane']['llm_calls']})",
             "", "## Agents", "", "| Agent | Tasks | Tokens | Busy time (s) |", "|---|---:|---:|---:|"]
    for name, row in sorted(per_agent(result).items()):
        lines.append(f"| {name} | {row['tasks']:.0f} | {row['tokens']:.0f} | {row['busy_s']:.1f} |")
    lines += ["", "## Tasks", "", "| Task | Agent | Status | Attempts | Tokens | Time (s) |",
              "|---|---|---|---:|---:|---:|"]
    for task in result["tasks"]:
        took = (task["ended_at"] - task["started_at"]) if task["started_at"] and task["ended_at"] else 0.0
        tokens = task["tokens"]["prompt"] + task["tokens"]["completion"]
        lines.append(f"| {task['id']} | {task['agent'] or '-'} | {task['status']} | {task['attempts']} | "
                     f"{tokens} | {took:.1f} |")
    if result.get("conflicts"):
        lines += ["", "## Conflicts", ""]
        lines += [f"- **{c['topic']}** ({c['policy']}): {c['winner'] or 'synthesis'} stands: {c['reason']}"
                  for c in result["conflicts"]]
    if result.get("plan", {}).get("repairs"):
        lines += ["", "## Plan repairs", ""] + [f"- {r}" for r in result["plan"]["repairs"]]
    lines += ["", "## Outputs", ""]
    for task in result["tasks"]:
        if task["output"] is not None:
            text = as_text(task["output"])
            clipped = text if len(text) <= OUTPUT_CHARS_IN_REPORT else text[:OUTPUT_CHARS_IN_REPORT] + " ..."
            lines += [f"### {task['id']} ({task['agent']})", "", clipped, ""]
        elif task["error"]:
            lines += [f"### {task['id']} ({task['agent']})", "", f"_{task['status']}: {task['error']}_", ""]
    return "\n".join(lines).rstrip() + "\n"
