"""Processes that a killed Serve process leaves behind, and how they are stopped.

`ray stop --force` (like SIGKILL or the OOM killer) kills Ray's workers but not the processes they started. Ray
stops a dead worker's children from the raylet, which it kills first. Two kinds outlive it here:

- **vLLM's engine processes**, children of a vLLM replica: they keep their memory, and vLLM's CPU worker spins
  on a core while it waits. Each vLLM replica starts an engine watchdog before its engine: a process of its own
  session (a kill of the replica's process group leaves it) that notes the replica's descendants twice a second.
  When its parent changes, the replica has died: it stops the descendants it knew, TERM and then KILL, and
  exits.
- **Serve's HAProxy**, a child of Serve's proxy actor in its high-throughput mode: it keeps the HTTP port, so
  the next Serve on the machine cannot bind it. `deploy` stops these orphans before it starts Serve.

    python serving/_orphans.py REPLICA_PID    # the engine watchdog
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

logger = logging.getLogger(__name__)
WATCHING = "watching"
POLL_S = 0.5
TERM_GRACE_S = 5.0


def start_engine_watchdog() -> subprocess.Popen:
    """Start a watchdog over this process's descendants, those it has and those it starts later; returns once
    it watches."""
    # -P: the script's folder, serving/, stays off sys.path
    watchdog = subprocess.Popen([sys.executable, "-P", __file__, str(os.getpid())], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert watchdog.stdout is not None
    if watchdog.stdout.readline() != f"{WATCHING}\n":
        logger.warning("the engine watchdog did not start (exit code %s): a killed replica may leave its engine "
                       "processes running", watchdog.wait())
    watchdog.stdout.close()
    return watchdog


def watch(parent: psutil.Process, *, parent_now: Callable[[], int] = os.getppid, poll_s: float = POLL_S,
          grace_s: float = TERM_GRACE_S) -> list[psutil.Process]:
    """Note `parent`'s descendants (this process aside) until `parent_now()` is no longer its pid; then stop
    those still running and return them."""
    known: list[psutil.Process] = []
    while parent_now() == parent.pid:
        try:
            descendants = parent.children(recursive=True)
        except psutil.NoSuchProcess:  # it has just died
            break
        known = alive([*known, *(proc for proc in descendants if proc.pid != os.getpid() and proc not in known)])
        time.sleep(poll_s)
    orphans = alive(known)
    stop(orphans, grace_s)
    return orphans


def stop_orphaned_haproxies(config_dir: str | None = None, grace_s: float = TERM_GRACE_S) -> list[int]:
    """Stop the HAProxy processes of Serve's proxies on this machine whose proxy has died (their parent is no
    longer a Ray worker); returns their pids. A Serve that runs keeps its own. `config_dir`: where Serve writes
    HAProxy's configs (default: Ray's `RAY_SERVE_HAPROXY_CONFIG_FILE_LOC` folder)."""
    if config_dir is None:
        from ray.serve._private.constants import RAY_SERVE_HAPROXY_CONFIG_FILE_LOC

        config_dir = os.path.dirname(RAY_SERVE_HAPROXY_CONFIG_FILE_LOC)
    orphans = []
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        serves = proc.info["name"] == "haproxy" and any(part.startswith(config_dir + os.sep) for part in cmdline)
        if serves and not _is_ray_worker(proc.info["ppid"]):
            orphans.append(proc)
    stop(orphans, grace_s)
    return [proc.pid for proc in orphans]


def _is_ray_worker(pid: int) -> bool:
    """Ray names its workers' processes `ray::<actor or task>`."""
    try:
        title = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return bool(title) and title[0].startswith("ray::")


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has ended; psutil also tells a reused pid from the original)."""
    running = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                running.append(proc)
        except psutil.NoSuchProcess:
            continue
    return running


def stop(processes: list[psutil.Process], grace_s: float) -> None:
    """TERM, then KILL what is left after `grace_s`."""
    for send in (psutil.Process.terminate, psutil.Process.kill):
        for proc in alive(processes):
            try:
                send(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):  # another user's is not ours to stop
                continue
        psutil.wait_procs(alive(processes), timeout=grace_s)


def main(replica_pid: int) -> None:
    try:
        replica = psutil.Process(replica_pid)
    except psutil.NoSuchProcess:  # it died before this started: it started no engine
        return
    print(WATCHING, flush=True)
    watch(replica)


if __name__ == "__main__":
    main(int(sys.argv[1]))
