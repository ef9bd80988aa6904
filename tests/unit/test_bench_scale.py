"""benchmarks/bench_scale.py's supervisor part drives the real SupervisorActor class with instant agents. When the
supervisor's call to an agent changed, the stub did not, every tick failed and the benchmark hung: this runs it."""

import importlib.util
from pathlib import Path

import pytest

from controlplane import parse_mission

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
bench_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_scale)


@pytest.mark.timeout(60)
def test_the_supervisor_part_runs_a_small_mission_to_success():
    assert bench_scale.supervisor_s(parse_mission(bench_scale._layered(30))) > 0
