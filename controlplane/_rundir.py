"""The run directory of a mission, on a local path or any fsspec URL every node can see.

    <run>/result.json    the state of every task, written by the supervisor when the mission ends
    <run>/events.jsonl   every transition, one JSON object a line
    <run>/report.md      a readable summary
    <run>/report.html    the timeline, critical path and bottleneck (`controlplane report RUN` renders it again)
    <run>/traces.jsonl   the mission's spans (OTLP JSON), written by its actors and the router as it runs
    <run>/log/, log.head the hash-chained mission log (controlplane._logfile)

The supervisor writes it (not the driver), so a mission whose driver died still leaves its record. Readers
here serve the storage-only CLI commands (`wait`, `result`, `logs`, `audit`): no Ray needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from controlplane._core.json_kind import json_kind
from controlplane._core.prompts import as_text
from controlplane._core.report_html import render_report_html
from controlplane._logfile import SEGMENTS
from controlplane.errors import RunRecordError

OUTPUT_CHARS_IN_REPORT = 400
RESULT = "result.json"
EVENTS = "events.jsonl"
REPORT = "report.md"
REPORT_HTML = "report.html"
TRACES = "traces.jsonl"
RESULT_KEYS = ("mission_id", "status", "reason", "tasks", "usage", "wall_s")


def run_uri(state_uri: str, mission_id: str) -> str:
    """The run directory of `mission_id` under `state_uri` (a runs directory or an fsspec URL)."""
    return f"{str(state_uri).rstrip('/')}/{mission_id}"


def write_run_dir(run: str, result: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> str:
    """Write `<run>/{events.jsonl, report.md, report.html, result.json}` (result.json last: its presence means
    done)."""
    fs, root = fsspec.core.url_to_fs(str(run))
    fs.makedirs(root, exist_ok=True)
    events = list(events)
    lines = "".join(json.dumps(event, default=str) + "\n" for event in events)
    _atomic_write(fs, f"{root}/{EVENTS}", lines.encode())
    _atomic_write(fs, f"{root}/{REPORT}", render_report(result).encode())
    write_report_html(run, result, events)
    _atomic_write(fs, f"{root}/{RESULT}", (json.dumps(result, indent=2, default=str) + "\n").encode())
    return str(run)


def write_report_html(run: str, result: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> str:
    fs, root = fsspec.core.url_to_fs(str(run))
    _atomic_write(fs, f"{root}/{REPORT_HTML}", render_report_html(result, events).encode())
    return f"{str(run).rstrip('/')}/{REPORT_HTML}"


def read_events(run: str) -> list[dict[str, Any]]:
    """The ended mission's events, or [] while they are not written; RunRecordError when a line is not JSON."""
    fs, root = fsspec.core.url_to_fs(str(run))
    path = f"{root}/{EVENTS}"
    if not fs.exists(path):
        return []
    lines = fs.cat_file(path).decode(errors="replace").splitlines()
    return [_parse(run, EVENTS, line, number) for number, line in enumerate(lines, 1) if line.strip()]


def read_result(run: str) -> dict[str, Any] | None:
    """The ended mission's result.json, or None while it is not written; RunRecordError when it is not a
    mission's result."""
    fs, root = fsspec.core.url_to_fs(str(run))
    path = f"{root}/{RESULT}"
    if not fs.exists(path):
        return None
    result = _parse(run, RESULT, fs.cat_file(path).decode(errors="replace"))
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise RunRecordError(run=run, file=RESULT, why=f"it lacks {', '.join(missing)}")
    return result


def _parse(run: str, file: str, text: str, line: int | None = None) -> dict[str, Any]:
    where = f"line {line}, " if line is not None else ""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunRecordError(run=run, file=file, why=f"it is not JSON ({where}{exc})") from None
    if not isinstance(record, dict):
        raise RunRecordError(run=run, file=file, why=f"{where}a JSON {json_kind(record)}, not an object")
    return record


def recorded_runs(runs_dir: str) -> list[str]:
    """The ids of the missions that ended with their results written under `runs_dir`."""
    return _runs(runs_dir, lambda fs, path: fs.exists(f"{path}/{RESULT}"))


def unfinished_runs(runs_dir: str) -> list[str]:
    """The ids of the missions under `runs_dir` with a log and no result: running, or stopped before their end."""
    return _runs(runs_dir, lambda fs, path: fs.exists(f"{path}/{SEGMENTS}") and not fs.exists(f"{path}/{RESULT}"))


def _runs(runs_dir: str, keep: Callable[[Any, str], bool]) -> list[str]:
    fs, root = fsspec.core.url_to_fs(str(runs_dir))
    if not fs.isdir(root):
        return []
    return sorted(path.rstrip("/").rsplit("/", 1)[-1] for path in fs.ls(root, detail=False) if keep(fs, path))


def run_exists(run: str) -> bool:
    fs, root = fsspec.core.url_to_fs(str(run))
    return fs.exists(root)


def _atomic_write(fs: Any, path: str, body: bytes) -> None:
    if isinstance(fs, LocalFileSystem):  # a reader never sees half a file
        tmp = path + ".tmp"
        fs.pipe_file(tmp, body)
        fs.mv(tmp, path)
    else:  # object stores replace an object atomically
        fs.pipe_file(path, body)


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
             f"- **Tokens:** {result['usage']['tokens']} (${result['usage'].get('usd', 0.0):.4f}) in "
             f"{result['usage']['llm_calls']} model calls (control plane: {result['control_plane']['tokens']} "
             f"tokens in {result['control_plane']['llm_calls']})",
             "", "## Agents", "", "Tokens and USD as the router charged them (failed calls included).", "",
             "| Agent | Tasks | Tokens | USD | Busy time (s) |", "|---|---:|---:|---:|---:|"]
    charged = result["usage"].get("by_agent", {})
    rows = per_agent(result)
    for name in sorted(rows.keys() | charged.keys()):
        row, usage = rows.get(name, {"tasks": 0, "busy_s": 0.0}), charged.get(name, {"tokens": 0, "usd": 0.0})
        lines.append(f"| {name} | {row['tasks']:.0f} | {usage['tokens']:.0f} | {usage['usd']:.4f} | "
                     f"{row['busy_s']:.1f} |")
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
