"""Tasks by state are kept as states change (a supervisor asks every tick; a 50k-task recount each time made the
per-task cost grow with the mission): they always equal a recount of the records."""

from collections import Counter

from controlplane._core.events import EventLog, MissionStatus
from controlplane._core.scheduler import Scheduler
from controlplane.config.mission import parse_mission

from _mission_data import mission


def recount(sched):
    counted = Counter(str(r.status) for r in sched.tasks.values())
    return {state: counted.get(state, 0) for state in sched.counts()}


def test_counts_follow_every_transition():
    data = mission(policies={"on_failure": "skip_dependents", "retry_backoff_s": 0.0},
                   tasks=[{"id": "a", "description": "d", "agent": "writer", "retries": 1},
                          {"id": "b", "description": "d", "agent": "checker", "depends_on": ["a"]},
                          {"id": "c", "description": "d", "agent": "checker2"},
                          {"id": "d", "description": "d", "agent": "writer", "depends_on": ["c"]}])
    spec = parse_mission(data)
    sched = Scheduler(spec.tasks, spec.agents, spec.policies, EventLog("m"), now_s=0.0)
    assert sched.counts() == recount(sched) and sched.counts()["ready"] == 2
    steps = []
    for now in range(1, 6):
        for a in sched.dispatch(float(now)):
            if a.task == "a":
                sched.on_failure(a.task, a.attempt, "boom", float(now))  # retried once, then failed
            else:
                sched.on_success(a.task, a.attempt, {"output": "x"}, float(now))
            steps.append(sched.counts() == recount(sched))
    assert all(steps) and sched.counts()["failed"] == 1 and sched.counts()["skipped"] == 1
    sched.stop(MissionStatus.CANCELLED, "stop", 9.0)
    assert sched.counts() == recount(sched)
