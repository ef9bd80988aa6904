"""benchmarks/bench_fleet.py's GPU form, built before a GPU ran it: its agents and replicas fit one GPU at the
issue's shares, a fleet that would not fit is refused before anything starts, and the GPU sampler reads
`nvidia-smi` (a stand-in script here) only inside the measured windows and says when it fails."""

import stat
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_fleet  # noqa: E402
from benchmarks._gpu_sampler import GpuSample, GpuSampler, parse_sample, summarise  # noqa: E402
from benchmarks.bench_gpu import router_config as gpu_router_config  # noqa: E402
from controlplane import parse_mission  # noqa: E402

GPU = bench_fleet.GPU


def test_the_gpu_forms_agents_and_replicas_fit_one_gpu_at_the_issues_shares(tmp_path):
    mission = parse_mission(bench_fleet.fleet_mission(GPU["agents"], 2, 64, GPU["per_agent"]))
    model = gpu_router_config(str(tmp_path), GPU["agents"], model_replicas=GPU["model_replicas"],
                              gpu_share=GPU["model_replicas"] * GPU["per_model_replica"]).models["default"]
    assert model.replicas.num_gpus == GPU["per_model_replica"] == 0.45
    assert model.replicas.min_replicas == model.replicas.max_replicas == 2
    assert model.gpu_memory_utilization <= model.replicas.num_gpus
    agent_gpus = [agent.resources.num_gpus for agent in mission.agents]
    assert len(agent_gpus) == 64 and set(agent_gpus) == {GPU["per_agent"]}
    assert sum(agent_gpus) + 2 * model.replicas.num_gpus <= 1


@pytest.fixture
def a_gpu_machine(monkeypatch):
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setattr(bench_fleet.shutil, "which", lambda name: f"/usr/bin/{name}")


def test_a_gpu_fleet_that_would_not_fit_one_gpu_is_refused_with_the_most_that_fits(a_gpu_machine, capsys):
    assert bench_fleet.parse(["--gpu"]).agents == 64
    with pytest.raises(SystemExit) as exit_:
        bench_fleet.parse(["--gpu", "--agents", "101"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--agents 101" in error and "at most 100" in error


def test_the_gpu_form_is_refused_where_there_is_no_gpu(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch",
                        types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False)))
    with pytest.raises(SystemExit):
        bench_fleet.parse(["--gpu"])
    assert "--gpu: no CUDA device" in capsys.readouterr().err


def test_counts_below_one_are_refused(capsys):
    for flag in ("--agents", "--calls"):
        with pytest.raises(SystemExit):
            bench_fleet.parse([flag, "0"])
        assert f"{flag} 0: must be at least 1" in capsys.readouterr().err


def _script(tmp_path: Path, body: str) -> tuple[str]:
    path = tmp_path / "nvidia-smi"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return (str(path),)


def test_the_sampler_reads_nvidia_smi_until_the_block_ends(tmp_path):
    with GpuSampler(interval_s=0.01, query=_script(tmp_path, 'echo "87, 120345, 143771"')) as gpu:
        while len(gpu.samples) < 3:
            pass
    assert {(s.utilization_pct, s.memory_used_mib, s.memory_total_mib) for s in gpu.samples} == {
        (87.0, 120345.0, 143771.0)}


def test_a_failing_nvidia_smi_is_raised_as_the_block_ends(tmp_path):
    with pytest.raises(RuntimeError, match="GPU sampling failed"):
        with GpuSampler(interval_s=0.01, query=_script(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")):
            pass


def test_only_samples_inside_the_windows_count():
    samples = [GpuSample(t, util, mem, 1000.0) for t, util, mem in
               [(0.5, 0.0, 900.0), (1.0, 80.0, 500.0), (1.5, 100.0, 600.0), (2.5, 0.0, 950.0), (3.0, 60.0, 400.0)]]
    figures = summarise(samples, [[1.0, 2.0], [3.0, 4.0]])
    assert figures == {"samples": 3, "sm_util_mean_pct": 80.0, "sm_util_p50_pct": 80.0, "sm_util_min_pct": 60.0,
                       "memory_used_peak_mib": 600.0, "memory_total_mib": 1000.0}
    assert summarise(samples, [[10.0, 11.0]])["sm_util_mean_pct"] is None
    assert parse_sample(" 7, 1024, 2048\n", 1.0) == GpuSample(1.0, 7.0, 1024.0, 2048.0)


def test_the_gpu_summary_line_names_the_device_shape_and_utilisation():
    gpu = {"samples": 9, "sm_util_mean_pct": 91.4, "sm_util_p50_pct": 93.0, "sm_util_min_pct": 40.0,
           "memory_used_peak_mib": 122880.0, "memory_total_mib": 143360.0}
    figures = {"fleet_runs": [{"short_calls": 0}], "gpu": True, "device": "NVIDIA H200", "shape": "1.7b",
               "engine": "vllm 0.26.0", "cores": 16, "mode": "full", "agents": 64, "calls_per_task": 2,
               "max_tokens": 64, "replicas": 2, "load_before": 1.0, "load_after": 2.0, "fleet_vs_offline_tok_s": 0.85,
               "fleet_tok_s": 8500.0, "offline_tok_s": 10000.0, "gpu_fleet": gpu,
               "gpu_offline": {**gpu, "sm_util_mean_pct": None, "memory_used_peak_mib": None}}
    line = bench_fleet.summary_line(figures)
    assert "NVIDIA H200, 1.7b shape" in line and "0.850x (>= 0.8)" in line
    assert "fleet SM util 91% mean, memory peak 120.0 of 140 GiB" in line and "offline SM util n/a" in line
