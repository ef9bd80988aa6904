"""A local autoscaling cluster: `ray start --head` with Ray's fake multi-node provider (nodes are raylets on
this machine), on its own ports and temp dir, stopped by killing only its own processes.

`AutoscalingCluster` from the Ray 2.60 wheel cannot be used (its base config is not shipped, and it runs
`ray stop --force`, which would stop every Ray on the machine). Used by the autoscaler test and by
benchmarks/bench_scale.py; run as a script it is the driver side of a measurement:

    python fake_autoscaler.py measure ADDRESS         # GPU actors -> seconds until fake GPU nodes serve them,
                                                      # then seconds until the idle nodes are gone (JSON)
    python fake_autoscaler.py wait-gone ADDRESS T     # wall time at which no GPU node is left (JSON)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from serving._orphans import alive, stop

RAY = str(Path(sys.executable).parent / "ray")
GPU_TYPE = "gpu_worker"
IDLE_TIMEOUT_MIN = 0.2
START_ATTEMPTS = 3


def autoscaler_config(gcs_address: str, *, gpu_max_workers: int = 2) -> dict:
    """The hand-written fake multi-node config (see ../shared/notes/stack.md): a head that never scales and
    GPU workers of 2 CPUs and 1 GPU each, from 0 up to `gpu_max_workers`."""
    return {
        "cluster_name": f"fake-{uuid.uuid4().hex[:6]}",
        "max_workers": gpu_max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "auth": {"ssh_user": "nobody"},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            GPU_TYPE: {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0,
                       "max_workers": gpu_max_workers},
        },
        **{key: [] for key in ("file_mounts_sync_continuously", "cluster_synced_files", "initialization_commands",
                               "setup_commands", "head_setup_commands", "worker_setup_commands",
                               "head_start_ray_commands", "worker_start_ray_commands")},
        "file_mounts": {},
    }


@dataclass
class FakeCluster:
    address: str
    """GCS address to join (`ray.init(address=...)`, `--address`)."""
    env: dict[str, str]
    """Environment for drivers: token auth on, the autoscaler config named for the pre-flight check."""
    config_path: Path
    temp_dir: str


@contextmanager
def fake_autoscaling_cluster(work_dir: Path, *, head_resources: dict[str, float] | None = None,
                             gpu_max_workers: int = 2) -> Iterator[FakeCluster]:
    """Start the cluster (head: 2 CPUs, no GPU), yield it, then stop its processes (and only those)."""
    import ray._private.services as services

    from tests.helpers import free_ports

    temp_dir = f"/tmp/cpfake-{uuid.uuid4().hex[:6]}"
    names = ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "metrics-export-port", "node-manager-port", "object-manager-port", "runtime-env-agent-port")
    port, *others = free_ports(1 + len(names))
    ports = dict(zip(names, others))
    address = f"{services.get_node_ip_address()}:{port}"
    config_path = work_dir / "autoscaler.yaml"
    config_path.write_text(yaml.safe_dump(autoscaler_config(address, gpu_max_workers=gpu_max_workers)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_AUTH_MODE": "token", "CONTROLPLANE_AUTOSCALER_CONFIG": str(config_path),
        "PATH": f"{Path(RAY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [RAY, "start", "--head", "--port", str(port), "--num-cpus", "2", "--num-gpus", "0",
           "--resources", json.dumps(head_resources or {}), "--temp-dir", temp_dir, "--include-dashboard", "false",
           "--disable-usage-stats", "--min-worker-port", "0", "--max-worker-port", "0",
           f"--autoscaling-config={config_path}", *[a for name, p in ports.items() for a in (f"--{name}", str(p))]]
    start_env = env | {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    try:
        for _ in range(START_ATTEMPTS):
            started = subprocess.run(cmd, env=start_env, capture_output=True, text=True, timeout=240)
            if started.returncode == 0:
                break
            stop_processes_of(temp_dir)  # Ray waits 30 s at most for its raylet: a busy machine may miss that
        else:
            raise RuntimeError(f"ray start failed: {started.stdout[-2000:]}{started.stderr[-2000:]}")
        yield FakeCluster(address=address, env=env, config_path=config_path, temp_dir=temp_dir)
    finally:
        stop_processes_of(temp_dir)


def stop_processes_of(temp_dir: str, grace_s: float = 3.0) -> None:
    """Stop this cluster's processes by pid, TERM then KILL: those whose command line names `temp_dir`, and their
    children (Serve's HAProxy names no temp dir, and outlives a parent that is killed)."""
    def named() -> set[psutil.Process]:
        found = set()
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(temp_dir in part for part in proc.info["cmdline"] or []):
                    found |= {proc, *proc.children(recursive=True)}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    first = named()
    stop(list(first), grace_s)
    stop(list(named()), grace_s)  # those started while the first ones were stopping
    left = alive(list(first | named()))
    if left:
        raise RuntimeError(f"processes of {temp_dir} still alive: {[p.pid for p in left]}")


def run_driver(cluster: FakeCluster, *args: str, timeout_s: float = 300) -> dict:
    """Run this file as a driver against `cluster` (a process of its own: the caller may be in another Ray)."""
    done = subprocess.run([sys.executable, __file__, *args, cluster.address], env=cluster.env, capture_output=True,
                          text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"driver {args} failed: {done.stdout[-2000:]}{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gpu_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0)


def _wait(condition, timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s")
        time.sleep(0.2)
    return time.time()


def measure(address: str, *, actors: int = 3, gpus_each: float = 0.5, timeout_s: float = 180) -> dict:
    """Actors asking for GPUs on a cluster with none: seconds until all run (nodes up), then, once they are
    killed, seconds until no GPU node is left."""
    import ray

    ray.init(address=address, log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Holder:
        def gpu(self) -> list[str]:
            return [str(g) for g in ray.get_gpu_ids()]

    assert _gpu_nodes() == 0, "the cluster must start without GPU nodes"
    asked = time.time()
    holders = [Holder.options(num_gpus=gpus_each).remote() for _ in range(actors)]
    gpu_ids = ray.get([h.gpu.remote() for h in holders], timeout=timeout_s)
    up = time.time()
    nodes = _gpu_nodes()
    for holder in holders:
        ray.kill(holder)
    gone = _wait(lambda: _gpu_nodes() == 0, timeout_s, "scale-down")
    return {"up_s": up - asked, "down_s": gone - up, "gpu_nodes": nodes, "gpu_ids": gpu_ids}


def wait_gone(address: str, timeout_s: float) -> dict:
    import ray

    ray.init(address=address, log_to_driver=False)
    return {"gone_at_s": _wait(lambda: _gpu_nodes() == 0, timeout_s, "scale-down")}


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "measure":
        print(json.dumps(measure(sys.argv[-1])))
    elif command == "wait-gone":
        print(json.dumps(wait_gone(sys.argv[-1], float(sys.argv[2]))))
    else:
        raise SystemExit(f"unknown command {command!r}")
