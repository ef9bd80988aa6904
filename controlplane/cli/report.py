"""`controlplane report RUN`: render a run's report.html again from its run directory (result.json and
events.jsonl). The run directory itself is written by the supervisor (controlplane._rundir)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from controlplane._rundir import per_agent, read_events, read_result, render_report, run_uri, write_report_html
from controlplane._rundir import write_run_dir as _write
from controlplane.cli._codes import EXIT_FAILED, EXIT_OK
from controlplane.cli.audit import resolve_run
from controlplane.cli.connect import check_not_stopped

__all__ = ["per_agent", "render_report", "report_command", "write_run_dir"]


def report_command(args: argparse.Namespace) -> int:
    run = resolve_run(args.run, args.runs_dir)
    result = read_result(run)
    if result is None:
        check_not_stopped(run)
        print(f"mission in {run} has not ended, and its report is written when it does; `controlplane status "
              f"{args.run} --watch` follows it live", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {write_report_html(run, result, read_events(run))}")
    return EXIT_OK


def write_run_dir(runs_dir: str | Path, result: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> Path:
    """Write `<runs_dir>/<mission_id>/` as the supervisor does (result, events, report.md, report.html)."""
    return Path(_write(run_uri(str(runs_dir), str(result["mission_id"])), result, events))
