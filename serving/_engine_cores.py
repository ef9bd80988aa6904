"""`reserve_engine_cores`: the cores of a CPU engine's worker, kept for that worker alone.

On CPUs, vLLM binds its model worker to some cores and leaves the rest (`VLLM_CPU_NUM_OF_RESERVED_CPU`, at least
one) to "the scheduler and other processes". Nothing keeps those other processes off the worker's cores: in a Ray
node they are many (the raylet, GCS, the Serve proxy, the router, the replica, its engine core, the agents), and
the kernel spreads them over every core, so the worker waits on the run queue behind them (docs/benchmarks.md).

With `reserve_engine_cores` set, a vLLM replica on CPU moves every thread of its Ray node's processes off its
worker's cores once its engine is up, vLLM's workers excepted (its own, and any other replica's), and so are
the processes of other replicas that reserve cores too (one still starting must bind its worker within all the
cores); it gives the cores back when it stops. Ray's later workers inherit the raylet's cores. Before it starts its
engine, such a replica widens its own cores again, so that vLLM binds its worker as it would on a fresh node; every
vLLM model of a node should set it alike. The cost: the node's Ray side keeps only the reserved cores, also while
the engine idles.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator

import psutil

logger = logging.getLogger(__name__)
RESERVE_ENGINE_CORES_ENV = "CONTROLPLANE_RESERVE_ENGINE_CORES"
"""Set to 1 in a vLLM replica's environment by its model's `reserve_engine_cores`."""
ENGINE_WORKER = "VLLM::Worker"
"""vLLM's process title of its model worker."""
IDLE_RAY_WORKER = "ray::IDLE"


def widen_own_cores() -> None:
    """Every thread of this process may run on every core of the machine (within its cgroup's cpuset)."""
    _set_cores(os.getpid(), lambda _: set(range(os.cpu_count() or 1)))


def keep_node_off_engine_cores(replica: psutil.Process | None = None) -> tuple[set[int], int]:
    """Move the Ray node's processes off the cores of `replica`'s engine workers (default: this process's).
    Returns those cores and how many threads moved; nothing moves where the workers run on every core."""
    replica = replica or psutil.Process()
    cores = engine_worker_cores(replica)
    raylet = os.environ.get("RAY_RAYLET_PID")
    if not cores or raylet is None:
        return cores, 0
    own = {replica.pid} | {child.pid for child in replica.children(recursive=True)}
    moved = 0
    for _ in range(2):  # a worker the raylet starts while the first pass runs may still have the raylet's old cores
        others = [p for p in node_processes(int(raylet)) if p.pid in own or not _reserves_cores(p)]
        moved += _each_thread(others, lambda allowed: allowed - cores)
    logger.info("kept %d threads of this Ray node off cores %s, where the vLLM worker runs", moved, sorted(cores))
    return cores, moved


def give_node_engine_cores(cores: set[int]) -> int:
    """Undo `keep_node_off_engine_cores` when the replica stops: the node's threads may use `cores` again."""
    raylet = os.environ.get("RAY_RAYLET_PID")
    if not cores or raylet is None:
        return 0
    return _each_thread(node_processes(int(raylet)), lambda allowed: allowed | cores)


@contextlib.contextmanager
def off_cores(cores: set[int]) -> Iterator[int]:
    """Every thread of this process off `cores` while the block runs (yields how many moved); `cores` back after.
    A load generator beside an engine uses it to stay off the engine worker's cores, as a remote client would."""
    moved = _set_cores(os.getpid(), lambda allowed: allowed - cores)
    try:
        yield moved
    finally:
        _set_cores(os.getpid(), lambda allowed: allowed | cores)


def engine_worker_cores(replica: psutil.Process) -> set[int]:
    """The cores `replica`'s vLLM workers are bound to, or none when they may run on every core it may."""
    cores: set[int] = set()
    with contextlib.suppress(psutil.Error):
        for proc in replica.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.name() == ENGINE_WORKER:
                    cores |= set(proc.cpu_affinity() or [])
        if cores >= set(replica.cpu_affinity() or []):
            return set()
    return cores


def node_processes(raylet_pid: int) -> list[psutil.Process]:
    """The raylet, the processes of its Ray session (GCS, dashboard, monitors), and all their descendants."""
    try:
        raylet = psutil.Process(raylet_pid)
        session = _session_dir(raylet.cmdline())
    except psutil.Error:
        return []
    roots = [raylet]
    if session is not None:
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.pid != raylet_pid and any(session in arg for arg in proc.cmdline()):
                    roots.append(proc)
    found: dict[int, psutil.Process] = {}
    for root in roots:
        found[root.pid] = root
        with contextlib.suppress(psutil.Error):
            found.update((child.pid, child) for child in root.children(recursive=True))
    return list(found.values())


def _each_thread(processes: Iterable[psutil.Process], change: Callable[[set[int]], set[int]]) -> int:
    """`_set_cores` on every process but vLLM's workers (a thread that `change` would leave with no core keeps its
    own). Returns how many threads changed."""
    changed = 0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            if proc.name() != ENGINE_WORKER:
                changed += _set_cores(proc.pid, change)
    return changed


def _reserves_cores(proc: psutil.Process) -> bool:
    """A process of a replica that reserves its engine's cores (its environment says so; an idle Ray worker started
    with that environment is none yet). Another such replica's are left alone: one still starting must bind its
    worker within the cores it has."""
    try:
        return proc.environ().get(RESERVE_ENGINE_CORES_ENV) == "1" and proc.name() != IDLE_RAY_WORKER
    except psutil.Error:
        return False


def _set_cores(pid: int, change: Callable[[set[int]], set[int]]) -> int:
    """Apply `change` (allowed cores -> new cores) to each thread of `pid`; returns the threads changed."""
    if not hasattr(os, "sched_setaffinity"):
        return 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    changed = 0
    for tid in map(int, threads):
        try:
            allowed = os.sched_getaffinity(tid)
            wanted = change(allowed)
            if wanted and wanted != allowed:
                os.sched_setaffinity(tid, wanted)
                changed += 1
        except OSError:  # the thread ended meanwhile, or another user's
            continue
    return changed


def _session_dir(cmdline: list[str]) -> str | None:
    """The Ray session folder named in a raylet's command line (…/session_<date>_<pid>)."""
    for arg in cmdline:
        path = arg.split("=", 1)[-1]
        head, marker, tail = path.partition("/session_")
        if marker:
            return head + marker + tail.split("/", 1)[0]
    return None
