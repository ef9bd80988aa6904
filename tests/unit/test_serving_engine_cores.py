"""`reserve_engine_cores`: a Ray node's processes leave the cores of a CPU engine's worker (real processes standing in
for the raylet, GCS, a replica and vLLM's engine; no Ray cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil
import pytest

from serving._engine_cores import (
    RESERVE_ENGINE_CORES_ENV,
    engine_worker_cores,
    give_node_engine_cores,
    keep_node_off_engine_cores,
)

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
pytestmark = pytest.mark.skipif(len(CORES) < 2 or not os.path.isdir("/proc/self/task"),
                                reason="needs Linux and at least two cores")
SESSION = "/tmp/ray/session_2026-12-03_test_engine_cores"
WORKER_CORE = CORES[0] if CORES else 0

# Each stand-in prints "ready" once it is set up, then sleeps; a replica starts an engine core, which starts the
# worker, titled and bound as vLLM titles and binds it; the replica and the engine core also run a second thread.
SLEEPER = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); print('ready', flush=True)"
WORKER = ("import os, time; open('/proc/self/comm', 'w').write('VLLM::Worker'); os.sched_setaffinity(0, BOUND); "
          "print('ready', flush=True); time.sleep(60)")
STARTER = textwrap.dedent("""
    import subprocess, sys, threading, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\\n"
    threading.Thread(target=time.sleep, args=(60,)).start()
    print("ready", flush=True)
    time.sleep(60)
""")


def start(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def session_process(env: dict[str, str], title: str | None = None) -> psutil.Process:
    """A sleeper of the stand-in node (its command line names the session), with `env` added."""
    code = SLEEPER if title is None else f"open('/proc/self/comm', 'w').write({title!r}); {SLEEPER}"
    proc = subprocess.Popen([sys.executable, "-c", code, f"--session-dir={SESSION}"], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **env})
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return psutil.Process(proc.pid)


def node(worker_core: int | None) -> dict[str, psutil.Process]:
    """raylet -> replica -> engine core -> worker (bound to `worker_core`, or every core), GCS beside them."""
    bound = {worker_core} if worker_core is not None else set(CORES)
    raylet = start(STARTER, STARTER, STARTER, WORKER.replace("BOUND", repr(bound)),
                   f"--raylet_socket_name={SESSION}/sockets/raylet")
    gcs = start(SLEEPER, f"--log_dir={SESSION}/logs")
    procs = {"raylet": psutil.Process(raylet.pid), "gcs": psutil.Process(gcs.pid)}
    parent = procs["raylet"]
    for name in ("replica", "engine_core", "worker"):
        parent = procs[name] = parent.children()[0]
    return procs


def thread_cores(proc: psutil.Process) -> list[set[int]]:
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{proc.pid}/task")]


@pytest.fixture
def processes():
    started: list[psutil.Process] = []
    yield started
    for proc in started:
        for p in [*proc.children(recursive=True), proc]:
            p.kill()


def test_the_nodes_processes_leave_the_workers_cores_until_the_replica_stops(processes, monkeypatch):
    procs = node(WORKER_CORE)
    processes.extend([procs["raylet"], procs["gcs"]])
    bystander = start(SLEEPER)
    processes.append(psutil.Process(bystander.pid))
    other_replica = session_process({RESERVE_ENGINE_CORES_ENV: "1"})  # another replica that reserves cores
    processes.append(other_replica)
    idle_worker = session_process({RESERVE_ENGINE_CORES_ENV: "1"}, title="ray::IDLE")  # started with its env
    processes.append(idle_worker)
    monkeypatch.setenv("RAY_RAYLET_PID", str(procs["raylet"].pid))

    assert engine_worker_cores(procs["replica"]) == {WORKER_CORE}
    cores, moved = keep_node_off_engine_cores(procs["replica"])

    assert cores == {WORKER_CORE}
    rest = set(CORES) - {WORKER_CORE}
    for name in ("raylet", "gcs", "replica", "engine_core"):
        assert thread_cores(procs[name]) == [rest] * len(thread_cores(procs[name])), name
    moved_procs = [procs[n] for n in ("raylet", "gcs", "replica", "engine_core")] + [idle_worker]
    assert moved == sum(len(thread_cores(proc)) for proc in moved_procs)
    assert thread_cores(procs["worker"])[0] == {WORKER_CORE}
    assert all(cores == set(CORES) for cores in thread_cores(psutil.Process(bystander.pid)))  # not of the node
    assert all(cores == set(CORES) for cores in thread_cores(other_replica))  # binds its own worker later
    assert all(cores == rest for cores in thread_cores(idle_worker))
    assert os.sched_getaffinity(0) == set(CORES)  # nor is this process

    give_node_engine_cores(cores)  # the replica stops
    for name in ("raylet", "gcs", "replica", "engine_core"):
        assert thread_cores(procs[name]) == [set(CORES)] * len(thread_cores(procs[name])), name
    assert thread_cores(procs["worker"])[0] == {WORKER_CORE}


def test_a_worker_on_every_core_moves_nothing(processes, monkeypatch):
    procs = node(None)
    processes.extend([procs["raylet"], procs["gcs"]])
    monkeypatch.setenv("RAY_RAYLET_PID", str(procs["raylet"].pid))

    assert keep_node_off_engine_cores(procs["replica"]) == (set(), 0)
    assert all(cores == set(CORES) for cores in thread_cores(procs["raylet"]))


def test_a_replica_started_on_fewer_cores_widens_every_thread_before_its_engine_starts():
    code = textwrap.dedent(f"""
        import os, threading
        from serving._engine_cores import widen_own_cores
        os.sched_setaffinity(0, {{{CORES[-1]}}})  # inherited from a raylet kept off an engine's cores
        done = threading.Event()
        thread = threading.Thread(target=done.wait); thread.start()
        widen_own_cores()
        print(sorted(os.sched_getaffinity(0)), sorted(os.sched_getaffinity(thread.native_id)))
        done.set()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{CORES} {CORES}"


def test_a_load_generator_keeps_every_thread_off_the_cores_while_the_block_runs():
    code = textwrap.dedent(f"""
        import os, threading
        from serving._engine_cores import off_cores
        done = threading.Event()
        thread = threading.Thread(target=done.wait); thread.start()
        with off_cores({{{WORKER_CORE}}}) as moved:
            inside = [sorted(os.sched_getaffinity(0)), sorted(os.sched_getaffinity(thread.native_id))]
        print(moved >= 2, inside, sorted(os.sched_getaffinity(0)), sorted(os.sched_getaffinity(thread.native_id)))
        done.set()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rest = [c for c in CORES if c != WORKER_CORE]
    assert out.strip() == f"True {[rest, rest]} {CORES} {CORES}"
