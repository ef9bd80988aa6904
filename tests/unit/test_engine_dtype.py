from serving._dtype import cpu_flags, engine_dtype


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
