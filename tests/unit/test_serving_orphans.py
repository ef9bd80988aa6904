"""What a killed Serve process leaves behind is stopped: a vLLM replica's engine processes, Serve's HAProxy (real
processes, no Ray cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from serving._orphans import POLL_S, alive, stop_orphaned_haproxies, watch
from tests.helpers import free_port, listening_pids, wait_for

WATCHDOG = Path(__file__).parents[2] / "serving" / "_orphans.py"
IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
               "time.sleep(60)"


def ignoring_term() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"  # its handler is set
    return proc


def test_a_replica_killed_with_sigkill_leaves_no_engine_process():
    """The stand-in replica starts an engine-like child, then the watchdog, and is killed."""
    replica_code = textwrap.dedent(f"""
        import importlib.util, subprocess, sys, time
        spec = importlib.util.spec_from_file_location("watchdog", {str(WATCHDOG)!r})
        watchdog = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(watchdog)
        started = watchdog.start_engine_watchdog()  # before the engine, as the replica does
        engine = subprocess.Popen(["sleep", "60"])
        print(engine.pid, started.pid, flush=True)
        time.sleep(60)
    """)
    replica = subprocess.Popen([sys.executable, "-c", replica_code], stdout=subprocess.PIPE, text=True)
    assert replica.stdout is not None
    engine_pid, watchdog_pid = map(int, replica.stdout.readline().split())
    engine, watchdog = psutil.Process(engine_pid), psutil.Process(watchdog_pid)
    assert engine.ppid() == replica.pid and watchdog.ppid() == replica.pid
    assert os.getsid(watchdog_pid) != os.getsid(replica.pid)  # a kill of the replica's session leaves it

    time.sleep(2 * POLL_S)  # it has seen the engine
    os.kill(replica.pid, signal.SIGKILL)
    replica.wait()
    started = time.monotonic()
    wait_for(lambda: not alive([engine]), timeout_s=15, what="the orphaned engine to be stopped")
    assert time.monotonic() - started < 2  # a poll or two
    wait_for(lambda: not alive([watchdog]), timeout_s=5, what="the watchdog to exit")


def test_once_the_parent_changes_it_terms_then_kills_the_descendants_it_saw():
    parent = subprocess.Popen(["sleep", "60"])  # stands in for the replica; its "descendants" are ours
    polite, stubborn = subprocess.Popen(["sleep", "60"]), ignoring_term()
    polls = iter([parent.pid, 1])  # one look while the replica lives, then it is gone
    seen = {polite.pid, stubborn.pid}

    class Replica(psutil.Process):
        def children(self, recursive: bool = False) -> list[psutil.Process]:
            return [psutil.Process(pid) for pid in seen]

    started = time.monotonic()
    stopped = watch(Replica(parent.pid), parent_now=lambda: next(polls), poll_s=0.01, grace_s=0.3)
    assert {proc.pid for proc in stopped} == seen
    assert not alive(stopped)  # the stubborn one ignores TERM for 60 s: KILL ended it
    assert time.monotonic() - started < 3
    parent.kill()


def test_descendants_that_ended_while_the_replica_lived_are_not_signalled():
    parent, quick = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "0.2"])
    polls = iter([parent.pid, parent.pid, *[parent.pid] * 100, 1])

    class Replica(psutil.Process):
        def children(self, recursive: bool = False) -> list[psutil.Process]:
            return [psutil.Process(quick.pid)] if quick.poll() is None else []

    assert watch(Replica(parent.pid), parent_now=lambda: next(polls), poll_s=0.01) == []
    assert quick.wait(timeout=5) == 0  # it ended by itself, not by a signal
    parent.kill()


HAPROXY_CONFIG = """
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend web
    bind 127.0.0.1:{port}
    http-request return status 200
"""


def haproxy(config_dir: Path, name: str, *, parent_title: str | None) -> tuple[int, int, subprocess.Popen]:
    """Serve's HAProxy binary on a config in `config_dir`, started by a stand-in parent: one titled like a Ray
    worker that stays, or (None) one that exits at once and leaves it orphaned. Returns (its pid, its port, the
    parent)."""
    from ray.serve._private.haproxy import get_haproxy_binary

    port = free_port()
    config = config_dir / f"{name}.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port))
    title = f"import setproctitle; setproctitle.setproctitle({parent_title!r})" if parent_title else ""
    parent_code = textwrap.dedent(f"""
        import subprocess, sys, time
        {title}
        proc = subprocess.Popen([{get_haproxy_binary()!r}, "-db", "-f", {str(config)!r}], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        print(proc.pid, flush=True)
        {"time.sleep(60)" if parent_title else ""}
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    wait_for(lambda: pid in listening_pids(port), timeout_s=15, what=f"HAProxy {name} to listen")
    return pid, port, parent


def test_a_serve_haproxy_whose_proxy_died_is_stopped_and_its_port_freed(tmp_path):
    orphan, port, gone = haproxy(tmp_path, "orphan", parent_title=None)
    kept, _, proxy = haproxy(tmp_path, "kept", parent_title="ray::ProxyActor")
    gone.wait(timeout=10)
    try:
        assert stop_orphaned_haproxies(str(tmp_path), grace_s=2) == [orphan]
        assert alive([psutil.Process(kept)])  # its proxy lives
        assert not listening_pids(port)  # nothing holds the HTTP port for the next Serve
    finally:
        proxy.kill()
        psutil.Process(kept).kill()
