"""`controlplane wait|result|logs|audit`: read a mission from its run directory (storage, never Ray).

RUN is a run directory (a local path or an fsspec URL), or a mission id looked up under --runs-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from controlplane._core.mission_log import FINAL_MISSION_STATUSES, Head, Record
from controlplane._logfile import read_log, verify_log
from controlplane._rundir import read_result, run_exists, run_uri
from controlplane.cli._codes import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from controlplane.cli.connect import check_not_stopped, not_found
from controlplane.errors import RunRecordError

POLL_S = 0.5
SUMMARY_FIELDS = ("task", "agent", "attempt", "status", "message", "tool", "outcome", "reason", "error")


def resolve_run(run: str, runs_dir: str) -> str:
    """`run` itself when it names a run directory, else `<runs_dir>/<run>`; MissionNotFound when neither exists."""
    for candidate in (run, run_uri(runs_dir, run)):
        if run_exists(candidate):
            return candidate
    raise not_found(run, runs_dir)


def exit_code(status: str) -> int:
    return {"succeeded": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(status, EXIT_FAILED)


def wait_command(args: argparse.Namespace) -> int:
    """Block until the mission's result.json is written (by its supervisor), then print its outcome."""
    run = resolve_run(args.run, args.runs_dir)
    deadline = None if args.timeout_s is None else time.monotonic() + args.timeout_s
    while (result := read_result(run)) is None:
        check_not_stopped(run)
        if deadline is not None and time.monotonic() > deadline:
            print(f"mission in {run} has not ended after {args.timeout_s:g} s", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(POLL_S)
    print(f"mission {result['mission_id']} {result['status']}"
          f"{': ' + result['reason'] if result.get('reason') else ''}; result: {run}/result.json", flush=True)
    return exit_code(result["status"])


def result_command(args: argparse.Namespace) -> int:
    """Print result.json; exit 1 while the mission has not ended."""
    run = resolve_run(args.run, args.runs_dir)
    result = read_result(run)
    if result is None:
        check_not_stopped(run)
        print(f"mission in {run} has not ended; `controlplane wait {args.run}` blocks until it does",
              file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, indent=2, default=str))
    return exit_code(result["status"])


def logs_command(args: argparse.Namespace) -> int:
    """Print the mission log, one line a record; with --follow, until the mission ends."""
    run = resolve_run(args.run, args.runs_dir)
    after = -1
    while True:
        for record in read_log(run, after_seq=after):
            print(format_record(record), flush=True)
            after = record.seq
            if record.kind == "mission.status" and record.data.get("status") in FINAL_MISSION_STATUSES:
                return EXIT_OK
        if not args.follow:
            return EXIT_OK
        check_not_stopped(run)
        time.sleep(POLL_S)


def audit_verify_command(args: argparse.Namespace) -> int:
    """Exit 0 when the hash chain is whole (and reaches result.json's head, when there is one), else 1."""
    run = resolve_run(args.run, args.runs_dir)
    try:
        result = read_result(run)
    except RunRecordError as exc:
        print(f"warning: {exc.why} in {run}/{exc.file}: the chain is checked without the head it records",
              file=sys.stderr)
        result = None
    head = (result or {}).get("log_head")
    verdict = verify_log(run, expected_head=Head(seq=head["seq"], hash=head["hash"]) if head else None)
    if verdict.ok:
        print(f"ok: {run}: {verdict.records} records, chain whole" + (f", head {head['seq']}:{head['hash'][:16]}"
                                                                      if head else ""))
        return EXIT_OK
    print(f"bad: {run}: record {verdict.first_bad_seq}: {verdict.reason}")
    return EXIT_FAILED


def audit_show_command(args: argparse.Namespace) -> int:
    """Print the records, filtered by kind (`task` or `task.dispatch`) and agent."""
    run = resolve_run(args.run, args.runs_dir)
    records = read_log(run)
    shown = [record for record in records if matches(record, kinds=args.kind or [], agent=args.agent)]
    for record in shown:
        print(json.dumps(record.to_dict(), default=str) if args.json else format_record(record))
    if records and not shown:
        kinds = sorted({record.kind for record in records})
        agents = sorted({str(who) for record in records for who in (record.actor, record.data.get("agent")) if who})
        print(f"no record matches; the kinds in this log: {', '.join(kinds)}; its agents: {', '.join(agents)}",
              file=sys.stderr)
    return EXIT_OK


def matches(record: Record, *, kinds: list[str], agent: str | None) -> bool:
    kind_ok = not kinds or any(record.kind == k or record.kind.split(".", 1)[0] == k for k in kinds)
    return kind_ok and (agent is None or agent in (record.actor, record.data.get("agent")))


def format_record(record: Record) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(record.time_s)) + f".{int(record.time_s * 1000) % 1000:03d}"
    fields = " ".join(f"{name}={_short(record.data[name])}" for name in SUMMARY_FIELDS if name in record.data)
    return f"{record.seq:>6} {stamp} {record.actor:<14} {record.kind:<18} {fields}"


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
