"""vLLM's engine arguments for a model spec, and where its replica runs.

The engine's dtype on CPUs: vLLM's `auto` takes the checkpoint's, bfloat16 for most small models, and vLLM's CPU
kernels compute bfloat16 natively only with AVX512-BF16 or AMX. Without them (e.g. an AMD EPYC with AVX2 only), a
bfloat16 engine ran 4x slower than float32 at 16 concurrent calls and took 6x longer to prefill (bench_serving,
docs/benchmarks.md), so `auto` on such a CPU means float32."""

from __future__ import annotations

import platform
from typing import Any

from controlplane.config import VLLMModelSpec

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


def on_gpu(bundles: list[dict[str, float]]) -> bool:
    """Whether a replica placed on these resource bundles runs its engine on a GPU."""
    return any(bundle.get("GPU", 0) for bundle in bundles)


def local_engine_dtype(requested: str, *, on_gpu: bool) -> str:
    """`engine_dtype` for the machine this runs on."""
    return engine_dtype(requested, on_gpu=on_gpu, machine=platform.machine(), cpu_flags=cpu_flags())


CPU_MAX_BATCHED_TOKENS = 512
"""Tokens per engine step on CPU (vLLM's CPU default: 2,048). vLLM aborts a request between steps, so this bounds how
long a cancelled or timed-out call's prefill holds the engine: 64 timed-out prompts held it 10.7 s in one step."""


COMPACT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}
"""Guided JSON with no free whitespace. With it allowed, SmolLM2 filled the demo's launch brief with 379 tokens of
newlines until `max_tokens` cut the JSON; without it the nine demo answers took 585 tokens against 1,119, and none
was cut. xgrammar, because it also keeps objects to their schema's properties (guidance let the model add its own,
and ran to the cap on four of nine answers); vLLM's request-level flag is not read, only the engine's."""


def vllm_engine_kwargs(spec: VLLMModelSpec) -> dict[str, Any]:
    """vLLM's engine arguments for `spec`; the user's `engine_kwargs` win over the project's defaults."""
    tools = ({"enable_auto_tool_choice": True, "tool_call_parser": spec.tool_call_parser}
             if spec.tool_style == "native" else {})
    cpu_step = {} if on_gpu([replica_bundle(spec)]) else {"max_num_batched_tokens": CPU_MAX_BATCHED_TOKENS}
    optional = {"gpu_memory_utilization": spec.gpu_memory_utilization, "load_format": spec.load_format}
    return {"max_model_len": spec.max_context_tokens, "enforce_eager": True, "dtype": spec.dtype,
            "structured_outputs_config": dict(COMPACT_JSON), **cpu_step,
            **tools, **{key: value for key, value in optional.items() if value is not None}, **spec.engine_kwargs}


def replica_bundle(spec: VLLMModelSpec) -> dict[str, float]:
    return {"CPU": spec.replicas.num_cpus, **({"GPU": spec.replicas.num_gpus} if spec.replicas.num_gpus else {})}
