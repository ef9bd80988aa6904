"""A vLLM replica killed outright leaves no engine process behind (serving/_orphans.py), also when Ray's raylet
cannot stop the dead worker's children, as under `ray stop --force`, which kills the raylet first. Here the raylet
is paused (SIGSTOP) while the replica is killed. The test kills the session's vLLM replica, so it runs last
(tests/integration/conftest.py)."""

import contextlib
import os
import signal

import psutil

from serving._orphans import TERM_GRACE_S, alive
from tests.helpers import actor_processes, wait_for


def vllm_replica() -> psutil.Process:
    """The process of the session's vLLM replica (Ray titles it after its actor)."""
    replicas = actor_processes("ray::ServeReplica:controlplane:vllm:default")
    assert len(replicas) == 1, replicas
    return replicas[0]


def test_a_killed_vllm_replica_leaves_no_engine_process(router):
    replica = vllm_replica()
    descendants = replica.children(recursive=True)
    watchdogs = [p for p in descendants if any("_orphans.py" in part for part in p.cmdline())]
    engines = [p for p in descendants if p not in watchdogs]
    assert len(watchdogs) == 1
    assert any("EngineCore" in p.name() for p in engines), [p.name() for p in engines]

    raylet = replica.parent()
    assert raylet.name() == "raylet"
    with paused(raylet):
        replica.kill()
        wait_for(lambda: not alive(engines), timeout_s=TERM_GRACE_S + 10, what="the engine's processes to end")
        wait_for(lambda: not alive(watchdogs), timeout_s=5, what="the watchdog to exit")


@contextlib.contextmanager
def paused(proc: psutil.Process):
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)
