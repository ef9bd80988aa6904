"""The mission's summary and result are typed; their dicts (what `result.json` holds) keep one shape."""

from controlplane._core.results import MissionResult, MissionSummary
from controlplane._core.task_record import TaskRecord
from controlplane.config.mission import TaskSpec

RESULT_KEYS = {"mission_id", "name", "goal", "status", "reason", "started_at", "ended_at", "wall_s", "tasks", "usage",
               "control_plane", "conflicts", "plan", "budgets", "agents", "run_dir", "log_head"}


def test_the_result_dict_has_every_field_and_each_task_as_its_record_dict():
    record = TaskRecord(spec=TaskSpec(id="t", description="d", agent="a"), output="done")
    result = MissionResult(mission_id="m", name="n", goal="g", status="succeeded", reason="", started_at=1.0,
                           ended_at=2.0, wall_s=1.0, tasks=[record], usage={"tokens": 3}, control_plane={},
                           conflicts=[], plan=None, budgets={}, agents={}, run_dir=None)
    as_dict = result.to_dict()
    assert set(as_dict) == RESULT_KEYS and as_dict["log_head"] is None
    assert as_dict["tasks"] == [record.to_dict()] and as_dict["tasks"][0]["output"] == "done"


def test_the_summary_dict_is_its_fields():
    summary = MissionSummary(mission_id="m", name="n", status="running", reason="", tasks={"running": 1},
                             busy_agents={"a": 1}, tokens=5, usd=0.0, llm_calls=1, elapsed_s=0.5, done=False)
    assert summary.to_dict() == {"mission_id": "m", "name": "n", "status": "running", "reason": "",
                                 "tasks": {"running": 1}, "busy_agents": {"a": 1}, "tokens": 5, "usd": 0.0,
                                 "llm_calls": 1, "elapsed_s": 0.5, "done": False, "approvals_waiting": 0}
