"""Scheduling priority of the control plane's latency-critical processes.

Ray starts every worker process at niceness 15 (its `worker_niceness` setting), below the driver and any
other program on the machine. On a busy machine that alone costs milliseconds per call: a memory search
in a Ray actor took 27 ms against 17 ms for the same FAISS search in the driver, on 2 cores at load 17.
The memory actor, the router and the vLLM replicas take normal priority back where the OS allows it.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def run_at_normal_priority(niceness: int = 0) -> bool:
    """Set every thread of this process (Linux niceness is per thread) to `niceness`; threads and child
    processes started later inherit it. False, and nothing changed, where the OS refuses (lowering
    niceness needs root or CAP_SYS_NICE) or has no per-thread priorities."""
    tasks = f"/proc/{os.getpid()}/task"
    if not hasattr(os, "setpriority") or not os.path.isdir(tasks):
        return False
    for tid in os.listdir(tasks):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), niceness)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except PermissionError:
            logger.info("running at niceness %d: lowering it needs root or CAP_SYS_NICE", os.nice(0))
            return False
    return True
