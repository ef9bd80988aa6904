"""Taking normal priority back from Ray's worker niceness (in a child process: niceness sticks)."""

import os
import subprocess
import sys

import pytest

CHILD = """
import os, threading
from controlplane._priority import run_at_normal_priority
os.nice(10)  # started niced, like a Ray worker
ready, done, seen = threading.Event(), threading.Event(), {}
def worker():
    ready.set(); done.wait()
    seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
thread = threading.Thread(target=worker); thread.start(); ready.wait()
changed = run_at_normal_priority(12)  # raising niceness is always allowed; lowering needs root
seen["main"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
done.set(); thread.join()
print(changed, seen["main"], seen["thread"])
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread niceness is Linux's")
def test_every_thread_of_the_process_gets_the_niceness():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                         cwd=os.getcwd()).stdout.split()
    assert out == ["True", "12", "12"]
