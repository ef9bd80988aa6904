"""TaskSlack: a task's slack in the planned DAG, in tasks, times the mean successful attempt so far; a delegated task
has its parent's."""

from controlplane._core.events import EventLog
from controlplane._core.scheduler import Scheduler
from controlplane._core.slack import TaskSlack
from controlplane.config import TaskSpec
from controlplane.config.mission import parse_mission
from tests.helpers import mission


def test_slack_is_counted_in_tasks_times_the_mean_attempt_and_a_delegated_task_has_its_parents():
    spec = parse_mission(mission(tasks=[
        {"id": "draft", "description": "d", "agent": "writer"},
        {"id": "review", "description": "r", "role": "reviewer", "depends_on": ["draft"]},
        {"id": "final", "description": "f", "agent": "writer", "depends_on": ["review"]},
        {"id": "side", "description": "s", "role": "reviewer"}]))
    sched = Scheduler(spec.tasks, spec.agents, spec.policies, EventLog("m"), now_s=0.0)
    slack = TaskSlack()
    assert slack.of(sched, "draft") == 0.0 and slack.of(sched, "side") == 2.0  # 1 s a task before any finished
    slack.attempt_succeeded(3.0)
    slack.attempt_succeeded(5.0)
    assert slack.of(sched, "side") == 8.0 and slack.of(sched, "final") == 0.0
    sched.add_task(TaskSpec(id="side.d1", description="help", agent="checker"), delegated_by="side", now_s=1.0)
    assert slack.of(sched, "side.d1") == 8.0
