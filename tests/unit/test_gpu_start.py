"""Replicas that share a GPU start their engines one at a time (vLLM charges another engine's start-up memory to
its own KV cache, vllm-project/vllm#55827): the lock serializes two processes on one GPU, not on two GPUs, is
dropped with a killed holder, and is not taken for a whole GPU or a CPU engine."""

import asyncio
import contextlib
import multiprocessing
import threading
import time

import pytest

from serving._gpu_start import lock_paths, one_engine_start_per_gpu, shares_a_gpu

SHARED = [{"CPU": 1, "GPU": 0.45}]


def _start_engine(lock_dir: str, visible: str, bundles: list, hold_s: float, spans, meet=None) -> None:
    """Hold the start for `hold_s`, or with `meet` (a barrier) until every replica holds it too, or 20 s."""
    async def start() -> None:
        async with one_engine_start_per_gpu(bundles, visible, lock_dir):
            began = time.time()
            if meet is None:
                await asyncio.sleep(hold_s)
            else:
                with contextlib.suppress(threading.BrokenBarrierError):  # serialized: the other never came
                    meet.wait(20)
            spans.append((began, time.time()))

    asyncio.run(start())


def _spans(tmp_path, *replicas: tuple[str, list], together: bool = False) -> list[tuple[float, float]]:
    """The spans in which the replicas held their starts; with `together`, each waits for the others inside, so
    that a slow process start cannot make starts that may overlap look serialized."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        spans = manager.list()
        meet = manager.Barrier(len(replicas)) if together else None
        processes = [context.Process(target=_start_engine, args=(str(tmp_path), visible, bundles, 0.6, spans, meet))
                     for visible, bundles in replicas]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
        return sorted(spans)


def _overlap(spans: list[tuple[float, float]]) -> bool:
    (_, first_end), (second_start, _) = spans
    return second_start < first_end


@pytest.mark.timeout(60)
def test_two_replicas_sharing_a_gpu_start_one_after_the_other(tmp_path):
    assert not _overlap(_spans(tmp_path, ("0", SHARED), ("0", SHARED)))


@pytest.mark.timeout(60)
def test_replicas_on_different_gpus_or_on_whole_gpus_start_together(tmp_path):
    assert _overlap(_spans(tmp_path, ("0", SHARED), ("1", SHARED), together=True))
    assert _overlap(_spans(tmp_path, ("0", [{"CPU": 1, "GPU": 1}]), ("0", [{"CPU": 1, "GPU": 1}]), together=True))
    assert _overlap(_spans(tmp_path, ("", [{"CPU": 2}]), ("", [{"CPU": 2}]), together=True))


@pytest.mark.timeout(60)
def test_a_killed_replicas_lock_is_dropped_with_it(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        holder = context.Process(target=_start_engine, args=(str(tmp_path), "0", SHARED, 60, manager.list()))
        holder.start()
        deadline = time.time() + 20
        while time.time() < deadline and not _held(tmp_path):
            time.sleep(0.05)
        assert _held(tmp_path)
        holder.kill()
        holder.join(10)
    started = time.time()
    asyncio.run(_enter_and_leave(tmp_path))
    assert time.time() - started < 5


async def _enter_and_leave(tmp_path) -> None:
    async with one_engine_start_per_gpu(SHARED, "0", str(tmp_path)):
        pass


def _held(tmp_path) -> bool:
    import fcntl

    with open(lock_paths("0", str(tmp_path))[0], "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def test_locks_are_named_after_each_visible_gpu_in_one_order():
    assert lock_paths("GPU-b1, 0", "/run") == ["/run/controlplane-engine-start-gpu-0",
                                                "/run/controlplane-engine-start-gpu-GPU-b1"]
    assert lock_paths("", "/run") == lock_paths(None, "/run") == ["/run/controlplane-engine-start-gpu-all"]
    assert shares_a_gpu(SHARED) and not shares_a_gpu([{"CPU": 1, "GPU": 1}]) and not shares_a_gpu([{"CPU": 2}])
