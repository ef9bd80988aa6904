"""`controlplane approvals RUN`, `controlplane approve|deny RUN ID [--reason]` and `controlplane stop --all`:
human approvals of a live mission, and the kill switch for every mission on a cluster."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from controlplane._rundir import read_result, run_uri
from controlplane.cli._codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from controlplane.cli.connect import check_address, connect, join_cluster, not_found

ARGUMENTS_SHOWN_CHARS = 400


def approvals_command(args: argparse.Namespace) -> int:
    from actors import approvals

    ended = _ended_status(args)
    if ended is not None:
        print(f"mission {args.mission_id} ended ({ended}): nothing waits for approval")
        return EXIT_OK
    _join(args)
    waiting = approvals(args.mission_id)
    if args.json:
        print(json.dumps(waiting, indent=2, default=str))
        return EXIT_OK
    if not waiting:
        print(f"mission {args.mission_id}: nothing waits for approval")
    for a in waiting:
        print(f"{a['id']}  {a['tool']}  agent={a['agent']}  call={a['call_id']}  digest={a['arg_digest'][:12]}  "
              f"times out in {max(0.0, a['deadline_s'] - time.time()):.0f} s")
        shown = (_shortened(json.dumps(a["arguments"], default=str)) if a["arguments"] is not None
                 else "not known yet: the mission's supervisor restarted, and they show once the call asks again")
        print(f"  arguments: {shown}")
    return EXIT_OK


def _shortened(text: str) -> str:
    if len(text) <= ARGUMENTS_SHOWN_CHARS:
        return text
    return f"{text[:ARGUMENTS_SHOWN_CHARS]}... ({len(text)} characters; --json prints them whole)"


def approve_command(args: argparse.Namespace) -> int:
    return _decide(args, approve=True)


def deny_command(args: argparse.Namespace) -> int:
    return _decide(args, approve=False)


def stop_command(args: argparse.Namespace) -> int:
    """Cancel every mission on the cluster: dispatch stops, tool and model calls are cancelled, agents killed."""
    if not args.all:
        print("error: `controlplane stop` needs --all (to stop one mission: `controlplane cancel RUN`)")
        return EXIT_USAGE
    check_address(args.address)
    from actors import stop_all

    if not join_cluster(args.address):
        print("no Ray cluster to stop (pass --address)")
        return EXIT_FAILED
    stopped = stop_all(args.reason or "stopped by `controlplane stop --all`")
    for mission_id, status in sorted(stopped.items()):
        print(f"mission {mission_id}: {status}")
    print(f"{len(stopped)} missions stopped")
    return EXIT_OK


def _decide(args: argparse.Namespace, *, approve: bool) -> int:
    from actors import approve as approve_call
    from actors import deny

    ended = _ended_status(args)
    if ended is not None:
        print(f"error: mission {args.mission_id} ended ({ended}); what waited for approval was denied as it ended",
              file=sys.stderr)
        return EXIT_FAILED
    _join(args)
    decision: dict[str, Any] = (approve_call if approve else deny)(args.mission_id, args.approval_id,
                                                                  reason=args.reason)
    print(f"mission {args.mission_id}: {decision['id']} ({decision['tool']}) {decision['status']} "
          f"by {decision['decided_by']}")
    return EXIT_OK


def _ended_status(args: argparse.Namespace) -> str | None:
    """The status the mission ended with, from its result.json under --runs-dir; None while none is recorded."""
    result = read_result(run_uri(args.runs_dir, args.mission_id))
    return None if result is None else str(result["status"])


def _join(args: argparse.Namespace) -> None:
    if not connect(args.address, args.runs_dir, args.mission_id):
        raise not_found(args.mission_id, args.runs_dir)


def add_parsers(sub: Any) -> None:
    """The governance subcommands, on `controlplane`'s subparsers."""
    listing = sub.add_parser("approvals", help="list what waits for a human approval in a running mission")
    _common(listing)
    listing.add_argument("--json", action="store_true", help="print the approvals as JSON, arguments whole")
    for name, text in (("approve", "approve a waiting tool call or plan"), ("deny", "deny a waiting call or plan")):
        cmd = sub.add_parser(name, help=text)
        _common(cmd)
        cmd.add_argument("approval_id", help="the id `controlplane approvals RUN` shows, e.g. ap-1")
        cmd.add_argument("--reason", default=None, help="why; the model (or the mission's result) reads it")
    stop = sub.add_parser("stop", help="kill switch: cancel every mission on the cluster")
    stop.add_argument("--all", action="store_true", help="every mission running on the cluster")
    stop.add_argument("--address", default=None, help="Ray cluster address (default: auto)")
    stop.add_argument("--reason", default=None, help="recorded as each mission's reason")


def _common(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("mission_id")
    cmd.add_argument("--address", default=None, help="Ray cluster address (default: auto)")
    cmd.add_argument("--runs-dir", default="runs", help="where `run` recorded the mission's cluster")


HANDLERS = {"approvals": approvals_command, "approve": approve_command, "deny": deny_command, "stop": stop_command}
