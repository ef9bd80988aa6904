"""Engines that share a GPU start one at a time.

vLLM sizes its KV cache from the whole device's free memory, measured before and after it profiles its model:
memory that another process takes meanwhile is charged to this engine. Two engines that start at once on one GPU
(the replicas of a model with a fractional `num_gpus`, which Serve starts together) so mis-size each other's KV
cache, or one fails with "No available memory for the cache blocks" (vllm-project/vllm#55827, open; seen on 0.24
to 0.28). vLLM's maintainers ask that instances on one GPU not start at the same time.

So a replica with a fractional GPU share holds a node-local lock for each GPU it sees while its engine starts (one
lock for all of the node's GPUs where it sees none itself: its engine's worker holds the GPU). A whole-GPU replica
shares its GPU with nobody and takes no lock. The locks are `flock`s on files named after the GPUs: the kernel
drops a dead replica's lock with its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import AsyncIterator

LOCK_PREFIX = "controlplane-engine-start-gpu-"


def shares_a_gpu(bundles: list[dict[str, float]]) -> bool:
    return any(0 < bundle.get("GPU", 0) < 1 for bundle in bundles)


def lock_paths(visible_devices: str | None, lock_dir: str) -> list[str]:
    """One lock file per GPU in `visible_devices` (CUDA_VISIBLE_DEVICES: indices or UUIDs), sorted so that every
    replica takes them in the same order; where it is unset, one lock for all of the node's GPUs."""
    names = [name.strip() for name in (visible_devices or "").split(",") if name.strip()] or ["all"]
    return [os.path.join(lock_dir, LOCK_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", name)) for name in sorted(names)]


@contextlib.asynccontextmanager
async def one_engine_start_per_gpu(bundles: list[dict[str, float]], visible_devices: str | None = None,
                                   lock_dir: str | None = None) -> AsyncIterator[None]:
    """Where the replica's placement `bundles` share a GPU, hold this node's start lock of each GPU of this process
    (`visible_devices`, default CUDA_VISIBLE_DEVICES) for the block; waiting does not block the event loop. Does
    nothing for a whole GPU, nor off GPUs: a CPU engine's KV cache is a fixed size (VLLM_CPU_KVCACHE_SPACE)."""
    if not shares_a_gpu(bundles):
        yield
        return
    if visible_devices is None:
        visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    with contextlib.ExitStack() as held:
        for path in lock_paths(visible_devices, lock_dir or tempfile.gettempdir()):
            fd = _open_lock(path)
            held.callback(os.close, fd)  # closing drops the lock
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield


def _open_lock(path: str) -> int:
    """Read-only, so that another user's lock file serves too; created only where missing (a sticky /tmp refuses
    O_CREAT on another user's file)."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
