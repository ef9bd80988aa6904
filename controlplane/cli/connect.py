"""Joining a Ray cluster from the CLI: start a local one, join one, or find the one a mission ran on."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from controlplane._logfile import SEGMENTS
from controlplane._rundir import read_result, recorded_runs, run_uri
from controlplane.errors import MissionNotFound, MissionStopped, SetupError

LOCAL_MIN_CPUS = 16


def init_ray(address: str | None, verbose: bool) -> bool:
    """Join a cluster (--address or $RAY_ADDRESS) or start a local Ray; True when it started a local one.
    SetupError when nothing answers at the address given."""
    check_address(address)
    import ray

    from actors import MISSION_NAMESPACE
    from controlplane._core.placement import HEAD_RESOURCE

    common: dict[str, Any] = {"namespace": MISSION_NAMESPACE, "log_to_driver": verbose,
              "logging_config": ray.LoggingConfig(log_level="INFO")}
    local = starts_local_ray(address)
    if local:  # include_dashboard=None: Ray starts its dashboard when its optional dependencies are installed
        context: Any = ray.init(num_cpus=max(LOCAL_MIN_CPUS, 4 * (os.cpu_count() or 1)), include_dashboard=None,
                           resources={HEAD_RESOURCE: 1}, **common)
        info = context.address_info
        print(dashboard_hint(context.dashboard_url, info.get("node_ip_address"), info.get("metrics_export_port")),
              flush=True)
    else:
        try:
            ray.init(address=address, **common)
        except ConnectionError:  # "auto" when no `ray start` ran on this machine
            source = "--address" if address else "$RAY_ADDRESS"
            raise SetupError(what=f"{address or os.environ['RAY_ADDRESS']!r} (from {source}) finds no Ray cluster "
                             "started on this machine",
                             fix="start one with `ray start --head`, give the head node's host:port, or leave out "
                                 "--address and unset RAY_ADDRESS to start a local Ray") from None
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    return local


def starts_local_ray(address: str | None) -> bool:
    """Whether `init_ray(address)` starts a local Ray, not joining a cluster."""
    return not (address or os.environ.get("RAY_ADDRESS"))


def check_address(address: str | None) -> None:
    """SetupError when `address` (else $RAY_ADDRESS) names a cluster that cannot be joined: a dashboard's URL, or
    one where nothing answers (ray.init would wait minutes on it)."""
    given = address or os.environ.get("RAY_ADDRESS")
    if not given or given in ("auto", "local"):
        return
    source = "--address" if address else "$RAY_ADDRESS"
    if given.startswith(("http://", "https://")):
        raise SetupError(what=f"{given!r} (from {source}) is a dashboard's address, which `ray job submit` takes; "
                         "joining a cluster takes its head's host:port",
                         fix=f"give --address HEAD_HOST:6379, or submit the mission as a job: `ray job submit "
                             f"--address {given} -- controlplane run MISSION.yaml`")
    if not reachable(given.removeprefix("ray://")):
        raise SetupError(what=f"no Ray cluster answers at {given!r} (from {source})",
                         fix="give the head node's host:port (`ray start --head` prints it; the port is 6379 unless "
                             "you chose another), or leave out --address and unset RAY_ADDRESS to start a local Ray")


def dashboard_hint(dashboard_url: str | None, node_ip: str | None, metrics_port: int | None) -> str:
    """Where to see the mission's metrics: Ray's dashboard when it runs, else how to get it or scrape them."""
    scrape = f"http://{node_ip}:{metrics_port}/metrics" if node_ip and metrics_port else None
    grafana = "Grafana: docs/grafana/controlplane.json (docs/observability.md)"
    if dashboard_url:
        url = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
        return f"Ray dashboard: {url} (Metrics tab){f'; Prometheus: {scrape}' if scrape else ''}; {grafana}"
    where = f"Prometheus can still scrape {scrape}" if scrape else "no metrics endpoint either"
    return ("Ray dashboard is off: its optional dependencies are missing (pip install 'ray[default]' turns it "
            f"on). {where}; {grafana}")


ADDRESS_FILE = "ray_address"


def record_address(runs_dir: str, mission_id: str, address: str) -> None:
    """Remember the mission's cluster, so `status` and `cancel` find it even with several clusters about."""
    folder = Path(runs_dir) / mission_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ADDRESS_FILE).write_text(address + "\n")


def check_not_stopped(run: str) -> None:
    error = stopped(run)
    if error is not None:
        raise error


def stopped(run: str) -> MissionStopped | None:
    """The error of a mission in the run directory `run` that will not end by itself: it started (it has a log) on
    a cluster of this machine, that cluster no longer answers, and the mission has no result. None otherwise: a
    cluster elsewhere that does not answer from here may still run it."""
    folder = Path(run)
    recorded = folder / ADDRESS_FILE
    if "://" in run or not recorded.is_file() or not (folder / SEGMENTS).is_dir():
        return None
    address = recorded.read_text().strip()
    if not _on_this_machine(address) or reachable(address):
        return None
    if read_result(run) is not None:  # read after the address: a local Ray stops once its `run` has the result
        return None
    return MissionStopped(run=run, why=f"the Ray cluster it ran on, on this machine ({address}), is gone")


def _on_this_machine(address: str) -> bool:
    import psutil

    host = address.rpartition(":")[0]
    return host == "localhost" or host in {entry.address for entries in psutil.net_if_addrs().values()
                                           for entry in entries}


def use_token_auth() -> None:
    """Ray 2.60 clusters started by `ray start` or `ray.init()` require the token from Ray's token file;
    a joining client sends it only with RAY_AUTH_MODE=token, read when Ray is imported. Default to that
    when the file exists; call before `import ray`."""
    if (Path.home() / ".ray" / "auth_token").is_file():
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def connect(address: str | None, runs_dir: str, mission_id: str) -> bool:
    """Join the mission's cluster (--address, else the one `run` recorded, else auto); False when none."""
    recorded = Path(runs_dir) / mission_id / ADDRESS_FILE
    if address is None and recorded.is_file():
        address = recorded.read_text().strip()
        if not reachable(address):  # that cluster is gone (a local Ray ends with its `run`)
            return False
    else:
        check_address(address)
    return join_cluster(address)


def join_cluster(address: str | None) -> bool:
    """Join the cluster at `address`, else the one `ray start` started on this machine; False when none answers.
    Ray's own INFO lines ("Connecting to existing Ray cluster ...") show with -v only."""
    import ray

    from actors import MISSION_NAMESPACE

    try:
        ray.init(address=address or "auto", namespace=MISSION_NAMESPACE, log_to_driver=False,
                 logging_level=logging.getLogger().getEffectiveLevel())
    except ConnectionError:
        return False
    return True


def not_found(mission_id: str, runs_dir: str) -> MissionNotFound | MissionStopped:
    """The error for a mission id that is neither running where the CLI looked nor recorded under `runs_dir`:
    MissionStopped when its run directory there holds a mission whose cluster, on this machine, is gone."""
    return stopped(run_uri(runs_dir, mission_id)) or MissionNotFound(
        mission_id=mission_id, known=recorded_runs(runs_dir),
        fix=f"check the id against the known ones; a mission recorded outside {runs_dir}/ is found with --runs-dir "
            "DIR, and a running one on another cluster with --address HOST:PORT")


def reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    except (OSError, ValueError):
        return False
