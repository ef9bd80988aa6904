"""The engine's dtype on CPUs: vLLM's `auto` takes the checkpoint's, bfloat16 for most small models, and vLLM's CPU
kernels compute bfloat16 natively only with AVX512-BF16 or AMX. Without them (e.g. an AMD EPYC with AVX2 only), a
bfloat16 engine ran 4x slower than float32 at 16 concurrent calls and took 6x longer to prefill (bench_serving,
docs/benchmarks.md), so `auto` on such a CPU means float32."""

from __future__ import annotations

import platform

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def engine_dtype(requested: str, *, on_gpu: bool, machine: str, cpu_flags: frozenset[str]) -> str:
    """The dtype to give vLLM: `requested`, except `auto` on an x86 CPU without native bfloat16 -> float32."""
    if requested != "auto" or on_gpu or machine not in ("x86_64", "AMD64"):
        return requested
    return "auto" if cpu_flags & NATIVE_BF16_FLAGS else "float32"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """This machine's CPU flags (empty where /proc/cpuinfo is missing)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def local_engine_dtype(requested: str, *, on_gpu: bool) -> str:
    """`engine_dtype` for the machine this runs on."""
    return engine_dtype(requested, on_gpu=on_gpu, machine=platform.machine(), cpu_flags=cpu_flags())
