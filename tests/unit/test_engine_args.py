from controlplane.config import VLLMModelSpec
from serving._engine_args import (
    CPU_MAX_BATCHED_TOKENS,
    cpu_flags,
    engine_dtype,
    replica_bundle,
    vllm_engine_kwargs,
)


def test_auto_is_float32_on_an_x86_cpu_without_native_bfloat16():
    assert engine_dtype("auto", on_gpu=False, machine="x86_64", cpu_flags=frozenset({"avx2", "fma"})) == "float32"


def test_auto_stays_the_checkpoints_where_bfloat16_is_native_or_on_a_gpu_or_not_x86():
    assert engine_dtype("auto", on_gpu=False, machine="x86_64", cpu_flags=frozenset({"avx512_bf16"})) == "auto"
    assert engine_dtype("auto", on_gpu=False, machine="x86_64", cpu_flags=frozenset({"amx_bf16"})) == "auto"
    assert engine_dtype("auto", on_gpu=True, machine="x86_64", cpu_flags=frozenset()) == "auto"
    assert engine_dtype("auto", on_gpu=False, machine="aarch64", cpu_flags=frozenset()) == "auto"


def test_a_dtype_the_user_chose_is_kept():
    assert engine_dtype("bfloat16", on_gpu=False, machine="x86_64", cpu_flags=frozenset()) == "bfloat16"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(str(info)) == frozenset({"fpu", "avx2", "avx512_bf16"})
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def _spec(**fields) -> VLLMModelSpec:
    return VLLMModelSpec(kind="vllm", **fields)


def test_a_cpu_replica_takes_short_engine_steps_and_a_gpu_replica_vllms_default():
    assert vllm_engine_kwargs(_spec())["max_num_batched_tokens"] == CPU_MAX_BATCHED_TOKENS
    gpu = _spec(replicas={"num_gpus": 0.5}, gpu_memory_utilization=0.45)
    assert "max_num_batched_tokens" not in vllm_engine_kwargs(gpu)
    assert replica_bundle(gpu) == {"CPU": gpu.replicas.num_cpus, "GPU": 0.5}


def test_the_dtype_is_passed_for_the_replica_to_resolve():
    assert vllm_engine_kwargs(_spec())["dtype"] == "auto"
    assert vllm_engine_kwargs(_spec(dtype="bfloat16"))["dtype"] == "bfloat16"


def test_the_users_engine_kwargs_win_over_the_projects_defaults():
    kwargs = vllm_engine_kwargs(_spec(gpu_memory_utilization=0.3,
                                      engine_kwargs={"max_num_batched_tokens": 4096, "enforce_eager": False}))
    assert kwargs["max_num_batched_tokens"] == 4096
    assert kwargs["enforce_eager"] is False
    assert kwargs["gpu_memory_utilization"] == 0.3


def test_guided_json_is_compact_unless_the_user_says_otherwise():
    assert vllm_engine_kwargs(_spec())["structured_outputs_config"] == {"backend": "xgrammar",
                                                                       "disable_any_whitespace": True}
    auto = {"backend": "auto"}
    kwargs = vllm_engine_kwargs(_spec(engine_kwargs={"structured_outputs_config": auto}))
    assert kwargs["structured_outputs_config"] == auto


def test_native_tool_calls_turn_on_vllms_tool_parser():
    kwargs = vllm_engine_kwargs(_spec(tool_call_parser="hermes"))
    assert kwargs["enable_auto_tool_choice"] is True and kwargs["tool_call_parser"] == "hermes"
    assert "tool_call_parser" not in vllm_engine_kwargs(_spec())
