"""The run directory's writer and report for the CLI (they live in controlplane._rundir, which the supervisor uses)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from controlplane._rundir import per_agent, render_report, run_uri
from controlplane._rundir import write_run_dir as _write

__all__ = ["per_agent", "render_report", "write_run_dir"]


def write_run_dir(runs_dir: str | Path, result: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> Path:
    """Write `<runs_dir>/<mission_id>/{result.json, events.jsonl, report.md}`; return the folder."""
    return Path(_write(run_uri(str(runs_dir), str(result["mission_id"])), result, events))
