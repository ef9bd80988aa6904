"""Tasks by state are kept as states change (a supervisor asks every tick; a 50k-task recount each time made the
per-task cost grow with the mission): they always equal a recount of the records."""

from collections import Counter

from controlplane._core.events import EventLog, MissionStatus
from controlplane._core.mission_log import make_record
from controlplane._core.recovery import rebuild_scheduler, replay
from controlplane._core.scheduler import Scheduler
from controlplane._logfile import DurableEventLog
from controlplane.config.mission import TaskSpec, parse_mission
from tests.helpers import mission


class ListWriter:
    """The mission log's writer over a list."""

    def __init__(self):
        self.records = []

    def append(self, kind, data, *, actor=None, time_s=None, commit=None, wait=True):
        self.records.append(make_record(self.records[-1] if self.records else None, time_s=time_s or 0.0,
                                        actor=actor or "supervisor", kind=kind, data=data))
        return self.records[-1]


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


def test_counts_hold_for_delegated_tasks_and_after_a_resume():
    spec = parse_mission(mission(tasks=[{"id": "a", "description": "d", "agent": "writer"},
                                        {"id": "b", "description": "d", "agent": "checker", "depends_on": ["a"]}]))
    log = DurableEventLog("m", ListWriter())
    sched = Scheduler(spec.tasks, spec.agents, spec.policies, log, now_s=0.0)
    a = sched.dispatch(1.0)[0]
    sched.add_task(TaskSpec(id="extra", description="d", agent="checker"), delegated_by="a", now_s=1.5)
    assert sched.counts() == recount(sched) and sched.counts()["ready"] == 1
    sched.on_success(a.task, a.attempt, {"output": "x"}, 2.0)
    assert sched.counts() == recount(sched)
    state = replay(log.writer.records)  # a restarted supervisor rebuilds from the log: b and extra ready, a done
    resumed, _ = rebuild_scheduler(state, state.task_specs(spec.tasks), spec.agents, spec.policies, EventLog("m"), 3.0)
    assert resumed.counts() == recount(resumed) and resumed.counts()["ready"] == 2
