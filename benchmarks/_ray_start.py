"""The benchmarks' own Ray cluster on a shared, busy machine: starting it, and looking up its actors."""

from __future__ import annotations

import time


def start_ray(num_cpus: int, attempts: int = 6) -> None:
    """ray.init of a new local cluster (never another run's cluster on the same machine), retried: on a machine
    at load 50 the raylet can miss Ray's fixed 30 s start-up window."""
    import psutil
    import ray

    for attempt in range(attempts):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return
        except Exception as exc:  # Ray raises a bare Exception for a node that timed out during startup
            ray.shutdown()
            leftovers = psutil.Process().children(recursive=True)  # its GCS and raylet live on otherwise
            for proc in leftovers:
                proc.kill()
            psutil.wait_procs(leftovers, timeout=10)
            if attempt == attempts - 1:
                raise
            print(f"  ray.init failed ({exc}); killed {len(leftovers)} leftover processes; retrying", flush=True)
            time.sleep(30)


def actor_alive(name: str, namespace: str) -> bool:
    """Whether Ray holds an actor of that name: created, and not killed (a killed one leaves its names)."""
    import ray

    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True
