"""benchmarks/bench_gpu.py's router settings: engines that share the GPU split it and its memory share."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_gpu import GPU_MEMORY_UTILIZATION, router_config  # noqa: E402


@pytest.mark.parametrize("model_replicas", [1, 2, 4])
def test_engines_sharing_the_gpu_split_it_and_the_runs_memory_share(model_replicas, tmp_path):
    model = router_config(str(tmp_path), 256, router_replicas=4,
                          model_replicas=model_replicas).models["default"]
    assert model.replicas.min_replicas == model.replicas.max_replicas == model_replicas
    assert model_replicas * model.replicas.num_gpus <= 1
    assert model_replicas * model.gpu_memory_utilization == pytest.approx(GPU_MEMORY_UTILIZATION, abs=0.01)
    assert model.engine_kwargs["max_num_seqs"] == 256
