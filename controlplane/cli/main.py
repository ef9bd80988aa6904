"""`controlplane run|resume|status|cancel|report|wait|result|logs|audit|keys|approvals|approve|deny|stop` and
`python -m controlplane`. One small function per subcommand.

Exit codes: 0 success, 1 mission failed or budget exceeded (or nothing found), 2 bad spec/usage/setup,
3 mission cancelled.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from controlplane.cli import governance, keys
from controlplane.cli._arg_types import port_number, positive_number, valid_name
from controlplane.cli._codes import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from controlplane.cli.connect import use_token_auth
from controlplane.cli.progress import drop_stdout
from controlplane.errors import ControlPlaneError, SetupError, SpecError

HTTP_PORT_HELP = "Serve's HTTP port, when Serve starts here (default 8000); a Serve that runs keeps its own"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="controlplane", description="Run fleets of LLM agents on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="INFO logs, and actor logs on the console")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a mission and wait for it")
    run.add_argument("mission", help="mission YAML file, e.g. missions/product_launch.yaml")
    run.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    run.add_argument("--runs-dir", default="runs", help="where <mission-id>/ is written (default: runs/)")
    run.add_argument("--mission-id", type=valid_name, help="mission id (default: <name>-<date>-<time>-<random>)")
    run.add_argument("--http-port", type=port_number, default=None, help=HTTP_PORT_HELP)
    run.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    run.add_argument("--state-uri", help="where <mission-id>/ with the mission log is kept: a directory or an fsspec "
                     "URL every node sees (default: --runs-dir)")
    resume = sub.add_parser("resume", help="continue a mission from its log (e.g. on a new cluster)")
    resume.add_argument("run", help="the mission's run directory (or fsspec URL), or its id under --runs-dir")
    resume.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    resume.add_argument("--runs-dir", default="runs",
                        help="where a mission id is looked up and the cluster address recorded (default: runs/)")
    resume.add_argument("--http-port", type=port_number, default=None, help=HTTP_PORT_HELP)
    resume.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    _storage_commands(sub)
    for name, text in (("status", "show where a mission stands"), ("cancel", "cancel a running mission")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("mission_id")
        cmd.add_argument("--address", default=None, help="Ray cluster address (default: auto)")
        cmd.add_argument("--runs-dir", default="runs", help="where finished missions are recorded")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
            cmd.add_argument("--watch", action="store_true",
                             help="follow the mission live: its critical path, slowest agent and bottleneck")
            cmd.add_argument("--interval", type=positive_number("2"), default=2.0,
                             help="seconds between --watch updates")
    report = sub.add_parser("report", help="render a run's report.html again from its run directory")
    report.add_argument("run", help="a mission id under --runs-dir, or a run directory")
    report.add_argument("--runs-dir", default="runs", help="where <mission-id>/ was written (default: runs/)")
    keys.add_parser(sub)
    governance.add_parsers(sub)
    return parser


def _storage_commands(sub: argparse._SubParsersAction) -> None:
    """wait, result, logs, audit: they read the run directory, not Ray."""
    def add(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("run", help="run directory (path or fsspec URL), or a mission id under --runs-dir")
        parser.add_argument("--runs-dir", default="runs", help="where mission ids are looked up (default: runs/)")
        return parser

    add(sub.add_parser("wait", help="wait for a mission to end and print its outcome")).add_argument(
        "--timeout-s", type=positive_number("600"), default=None, help="give up after this long (exit 1)")
    add(sub.add_parser("result", help="print a finished mission's result.json"))
    add(sub.add_parser("logs", help="print the mission log")).add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the mission ends")
    audit = sub.add_parser("audit", help="check or print the hash-chained audit log").add_subparsers(
        dest="audit_command", required=True)
    add(audit.add_parser("verify", help="exit 0 when the chain is whole, else 1 naming the first bad record"))
    show = add(audit.add_parser("show", help="print the log's records"))
    show.add_argument("--kind", action="append", help="only this kind (`task` or `task.dispatch`); repeatable")
    show.add_argument("--agent", help="only records by or about this agent")
    show.add_argument("--json", action="store_true", help="one JSON record a line")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # `run` gets Ray's logging config (driver and actors) in connect.init_ray
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command not in ("run", "resume"):  # before anything imports Ray; `run` decides once it knows where
        use_token_auth()
    from controlplane.cli import audit, missions, report, run

    handlers = {"run": run.run_command, "resume": run.run_command, "status": missions.status_command,
                "cancel": missions.cancel_command, "wait": audit.wait_command, "result": audit.result_command,
                "logs": audit.logs_command, "audit": audit.audit_verify_command, "keys": keys.keys_command,
                "report": report.report_command,
                **governance.HANDLERS}
    if args.command == "audit" and args.audit_command == "show":
        handlers["audit"] = audit.audit_show_command
    try:
        return handlers[args.command](args)
    except (SpecError, SetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # `status --watch`, `wait`, or `run` before its mission started: stop, no traceback
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        drop_stdout()
        return EXIT_BROKEN_PIPE
