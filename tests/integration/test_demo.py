"""End to end on the real default model (vLLM-CPU): a reduced product_launch mission.

The demo file itself is loaded and cut down to a fan-out/fan-in of four tasks with small max_tokens,
so the test stays short on a 2-core machine while exercising the real model, router and memory.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from actors import follow, start_mission
from controlplane import load_mission, parse_mission
from controlplane._core.mission_log import Head
from controlplane._logfile import read_log, verify_log

DEMO = Path(__file__).parents[2] / "missions" / "product_launch.yaml"
KEEP = {"brief": [], "market": ["brief"], "competitors": ["brief"], "edit": ["market", "competitors"]}


def reduced_demo() -> dict:
    data = yaml.safe_load(DEMO.read_text())
    data["tasks"] = [t | {"depends_on": KEEP[t["id"]]} for t in data["tasks"] if t["id"] in KEEP]
    used = {t["agent"] for t in data["tasks"]}
    data["agents"] = [a | {"max_tokens": 64} for a in data["agents"] if a["name"] in used]
    data["tasks"] = [{k: v for k, v in t.items() if k != "expected_output"} for t in data["tasks"]]
    data["workspace"] = str(DEMO.parent / data["workspace"])  # parse_mission does not resolve it as load_mission
    data["memory"] = {}  # no judge: contradiction checks are memory's tests
    roles = {a["role"] for a in data["agents"]}
    conflicts = data["policies"]["conflicts"]
    conflicts["role_priority"] = [r for r in conflicts["role_priority"] if r in roles]
    return data


def test_demo_file_is_valid_and_has_nine_agents_with_fan_out_and_fan_in():
    spec = load_mission(DEMO)
    assert len(spec.agents) == 9 and len(spec.tasks) == 9
    fan_out = [t.id for t in spec.tasks if t.depends_on == ["brief"]]
    fan_in = [t.id for t in spec.tasks if len(t.depends_on) >= 3]
    assert len(fan_out) >= 3 and fan_in == ["edit"]


def test_reduced_demo_runs_to_success_on_the_real_model(router, tmp_path):
    import ray

    spec = parse_mission(reduced_demo(), source=str(DEMO))
    handle = start_mission(spec, router=router, memory_dir=str(tmp_path / "memory"), run_dir=str(tmp_path / "run"))
    try:
        result = follow(handle, timeout_s=600)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    tasks = {t["id"]: t for t in result["tasks"]}
    assert all(isinstance(t["output"], str) and t["output"].strip() for t in tasks.values())
    assert all(0 < t["tokens"]["completion"] <= 64 * t["model_calls"] for t in tasks.values())
    assert tasks["edit"]["started_at"] >= max(tasks["market"]["ended_at"], tasks["competitors"]["ended_at"])
    # The router's accounting is the mission's: every agent's calls (failed ones included), per agent and in all.
    usage = result["usage"]
    assert usage["tokens"] == sum(agent["tokens"] for agent in usage["by_agent"].values())
    assert usage["tokens"] >= sum(t["tokens"]["prompt"] + t["tokens"]["completion"] for t in tasks.values())
    assert set(usage["by_agent"]) >= {t["agent"] for t in tasks.values()}
    # Every call ran under an agent's capability token (the router refuses any without one); the audit log of
    # the run verifies against the head in the result, and holds a record for each model call.
    verdict = verify_log(str(tmp_path / "run"), expected_head=Head(**result["log_head"]))
    assert verdict.ok, verdict
    calls = [r for r in read_log(str(tmp_path / "run")) if r.kind == "model.call"]
    assert len(calls) >= sum(t["model_calls"] for t in tasks.values()) and all(c.data["outcome"] for c in calls)
