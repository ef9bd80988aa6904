"""benchmarks/bench_gpu.py: engines that share the GPU split it and its memory share; a run of some phases reports
the ratios it can and names the rest n/a; an unknown phase is refused before anything starts."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_gpu import GPU_MEMORY_UTILIZATION, main, report, router_config  # noqa: E402


@pytest.mark.parametrize("model_replicas", [1, 2, 4])
def test_engines_sharing_the_gpu_split_it_and_the_runs_memory_share(model_replicas, tmp_path):
    model = router_config(str(tmp_path), 256, router_replicas=4,
                          model_replicas=model_replicas).models["default"]
    assert model.replicas.min_replicas == model.replicas.max_replicas == model_replicas
    assert model_replicas * model.replicas.num_gpus <= 1
    assert model_replicas * model.gpu_memory_utilization == pytest.approx(GPU_MEMORY_UTILIZATION, abs=0.01)
    assert model.engine_kwargs["max_num_seqs"] == 256


def test_a_run_of_some_phases_reports_the_ratios_it_has(tmp_path, capsys):
    figures = {"device": "NVIDIA H200", "shape": "1.7b", "concurrency": 256, "max_tokens": 64, "cores": 16,
               "offline_tok_s_c256": 10000.0, "vllm_server_tok_s_c256": 7000.0}
    assert report(figures, tmp_path / "gpu.json") == 0
    line = capsys.readouterr().out
    assert "vLLM server 0.700x" in line and "router(HTTP)/offline n/a" in line and "offline 10000 tok/s" in line
    assert figures["router_http_vs_vllm_server_tok_s"] is None


def test_an_unknown_phase_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--only", "offline,vllm"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--only 'offline,vllm'" in error and "['vllm']" in error and "vllm_server" in error
