"""`controlplane run|status|cancel|report` and `python -m controlplane`. One small function per subcommand.

Exit codes: 0 success, 1 mission failed or budget exceeded (or nothing found), 2 bad spec/usage/setup,
3 mission cancelled.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from controlplane.cli._codes import EXIT_FAILED, EXIT_USAGE
from controlplane.errors import ControlPlaneError, SetupError, SpecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="controlplane", description="Run fleets of LLM agents on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="INFO logs, and actor logs on the console")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a mission and wait for it")
    run.add_argument("mission", help="mission YAML file, e.g. missions/product_launch.yaml")
    run.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    run.add_argument("--runs-dir", default="runs", help="where <mission-id>/ is written (default: runs/)")
    run.add_argument("--mission-id", help="mission id (default: <name>-<date>-<time>-<random>)")
    run.add_argument("--http-port", type=int, default=None, help="Serve HTTP port (default 8000)")
    run.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    for name, text in (("status", "show where a mission stands"), ("cancel", "cancel a running mission")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("mission_id")
        cmd.add_argument("--address", default=None, help="Ray cluster address (default: auto)")
        cmd.add_argument("--runs-dir", default="runs", help="where finished missions are recorded")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
            cmd.add_argument("--watch", action="store_true",
                             help="follow the mission live: its critical path, slowest agent and bottleneck")
            cmd.add_argument("--interval", type=float, default=2.0, help="seconds between --watch updates")
    report = sub.add_parser("report", help="render a run's report.html again from its run directory")
    report.add_argument("run", help="a mission id under --runs-dir, or a run directory")
    report.add_argument("--runs-dir", default="runs", help="where <mission-id>/ was written (default: runs/)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # `run` gets Ray's logging config (driver and actors) in connect.init_ray
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from controlplane.cli import missions, report, run

    handlers = {"run": run.run_command, "status": missions.status_command, "cancel": missions.cancel_command,
                "report": report.report_command}
    try:
        return handlers[args.command](args)
    except (SpecError, SetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
