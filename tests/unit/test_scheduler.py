import pytest

from controlplane._core.events import EventLog, MissionStatus, TaskStatus
from controlplane._core.scheduler import Scheduler
from controlplane.config.mission import parse_mission
from tests.helpers import mission


def make(data=None):
    spec = parse_mission(data or mission())
    log = EventLog("m1")
    return Scheduler(spec.tasks, spec.agents, spec.policies, log, now_s=0.0), log


def ok(sched, a, now, out="done", tokens=(3, 4)):
    assert sched.on_success(a.task, a.attempt, {"output": out, "prompt_tokens": tokens[0],
                                                "completion_tokens": tokens[1]}, now)


def fan(width, concurrency=1, agents=3):
    return mission(
        agents=[{"name": f"a{i}", "role": "worker", "max_concurrency": concurrency} for i in range(agents)],
        tasks=[{"id": "root", "description": "r", "agent": "a0"}]
        + [{"id": f"w{i}", "description": "w", "role": "worker", "depends_on": ["root"]} for i in range(width)]
        + [{"id": "join", "description": "j", "agent": "a1", "depends_on": [f"w{i}" for i in range(width)]}])


def test_dependencies_gate_and_results_flow_to_dependents():
    sched, _ = make()
    first = sched.dispatch(0.0)
    assert [(a.task, a.agent) for a in first] == [("draft", "writer")]
    assert sched.dispatch(0.1) == []
    ok(sched, first[0], 1.0, out="the draft")
    review = sched.dispatch(1.0)
    assert [a.task for a in review] == ["review"]
    assert sched.context_for("review") == {"draft": "the draft"}


def test_parallel_fan_out_respects_max_concurrency_and_balances_roles():
    sched, _ = make(fan(6, concurrency=1, agents=3))
    ok(sched, sched.dispatch(0)[0], 1)
    wave = sched.dispatch(1)
    assert sorted(a.agent for a in wave) == ["a0", "a1", "a2"]
    assert [a.task for a in wave] == ["w0", "w1", "w2"]  # stable: declaration order
    assert sched.dispatch(1) == []  # every agent is busy
    ok(sched, wave[1], 2)
    nxt = sched.dispatch(2)
    assert [(a.task, a.agent) for a in nxt] == [("w3", wave[1].agent)]


def test_concurrency_two_runs_two_tasks_on_one_agent():
    sched, _ = make(fan(4, concurrency=2, agents=1) | {"tasks": fan(4, 2, 1)["tasks"][:-1]})
    ok(sched, sched.dispatch(0)[0], 1)
    assert [a.agent for a in sched.dispatch(1)] == ["a0", "a0"]


def test_fair_order_across_agent_queues_is_oldest_first():
    data = mission(agents=[{"name": "a", "role": "r"}, {"name": "b", "role": "r2"}],
                   tasks=[{"id": f"t{i}", "description": "x", "agent": "a" if i % 2 else "b"} for i in range(6)])
    sched, _ = make(data)
    got = []
    for step in range(6):
        batch = sched.dispatch(step)
        got += [a.task for a in batch]
        for a in batch:
            ok(sched, a, step + 0.5)
    assert got == ["t0", "t1", "t2", "t3", "t4", "t5"]


def test_retry_waits_for_backoff_then_fallback_then_fail_mission():
    data = mission(policies={"retry_backoff_s": 1.0, "retry_backoff_max_s": 1.5})
    data["tasks"][0].update(retries=2, fallback_agent="checker")
    sched, log = make(data)
    a = sched.dispatch(0)[0]
    assert sched.on_failure(a.task, a.attempt, "boom", 1.0)
    assert sched.tasks["draft"].status == TaskStatus.RETRYING
    assert sched.dispatch(1.5) == [] and sched.next_wakeup_s() == 2.0
    a = sched.dispatch(2.0)[0]
    assert (a.agent, a.attempt) == ("writer", 2)
    sched.on_failure(a.task, a.attempt, "boom", 3.0)
    assert sched.next_wakeup_s() == 4.5  # 2nd backoff doubled, capped at 1.5
    a = sched.dispatch(4.5)[0]
    sched.on_failure(a.task, a.attempt, "boom", 5.0)  # retries used up -> fallback
    a = sched.dispatch(5.0)[0]
    assert (a.agent, a.attempt) == ("checker", 4)
    assert any(e.status == "fallback" for e in log.events)
    sched.on_failure(a.task, a.attempt, "boom", 6.0, retryable=False)
    assert sched.finished and sched.status() == MissionStatus.FAILED
    assert sched.tasks["final"].status == TaskStatus.CANCELLED
    assert "draft" in sched.reason()


def test_skip_dependents_policy_keeps_independent_work():
    data = mission(policies={"on_failure": "skip_dependents"})
    data["tasks"].append({"id": "side", "description": "independent", "agent": "checker"})
    data["tasks"][0]["retries"] = 0
    sched, _ = make(data)
    batch = {a.task: a for a in sched.dispatch(0)}
    sched.on_failure("draft", batch["draft"].attempt, "bad", 1)
    assert sched.tasks["review"].status == TaskStatus.SKIPPED
    assert sched.tasks["final"].status == TaskStatus.SKIPPED
    assert not sched.finished
    ok(sched, batch["side"], 2)
    assert sched.finished and sched.status() == MissionStatus.FAILED
    assert sched.counts()["succeeded"] == 1 and sched.counts()["skipped"] == 2


def test_timeout_expiry_and_stale_results_are_ignored():
    data = mission()
    data["tasks"][0].update(timeout_s=5, retries=1)
    sched, _ = make(data)
    a = sched.dispatch(0)[0]
    assert sched.expired(4.9) == [] and sched.expired(5.0) == ["draft"]
    sched.on_failure("draft", a.attempt, "timed out after 5 s", 5.0)
    b = sched.dispatch(100)[0]
    assert not sched.on_success("draft", a.attempt, {"output": "late"}, 101)  # stale attempt
    ok(sched, b, 102)
    assert sched.tasks["draft"].output == "done" and sched.tasks["draft"].attempts == 2


def test_stop_cancels_everything_and_reports_running():
    sched, log = make()
    sched.dispatch(0)
    running = sched.stop(MissionStatus.CANCELLED, "cancelled by user", 1)
    assert running == ["draft"]
    assert sched.finished and sched.status() == MissionStatus.CANCELLED
    assert all(r.status == TaskStatus.CANCELLED for r in sched.tasks.values())
    assert sched.dispatch(2) == [] and sched.in_flight() == 0


def test_success_counts_tokens_and_every_transition_is_an_event():
    sched, log = make()
    for step in range(3):
        for a in sched.dispatch(step):
            ok(sched, a, step + 0.5)
    assert sched.status() == MissionStatus.SUCCEEDED
    assert [e.seq for e in log.events] == list(range(len(log.events)))
    statuses = [(e.task, e.status) for e in log.events if e.task == "draft"]
    assert statuses == [("draft", "ready"), ("draft", "running"), ("draft", "succeeded")]
    assert sched.tasks["final"].to_dict()["tokens"] == {"prompt": 3, "completion": 4}


def test_max_new_limits_dispatch():
    sched, _ = make(fan(5, agents=3))
    ok(sched, sched.dispatch(0)[0], 1)
    assert len(sched.dispatch(1, max_new=2)) == 2


def test_a_delegated_task_joins_the_running_dag_and_is_dispatched():
    from controlplane.config import TaskSpec

    log = EventLog("m")
    sched = Scheduler([TaskSpec(id="parent", description="p", agent="writer")],
                      parse_mission(mission()).agents, parse_mission(mission()).policies, log, 0.0)
    (first,) = sched.dispatch(0.0)
    child = TaskSpec(id="parent.d1", description="fix the tagline", role="reviewer")
    sched.add_task(child, delegated_by="parent", now_s=1.0)
    delegated = next(e for e in log.events if e.status == "delegated")
    assert delegated.agent is None and delegated.message == "added by parent for role 'reviewer'"  # a role is no agent
    (second,) = sched.dispatch(1.0)
    assert (second.task, second.agent) == ("parent.d1", "checker")
    assert sched.tasks["parent.d1"].to_dict()["delegated_by"] == "parent"
    assert not sched.finished
    sched.on_success("parent.d1", 1, {"output": "done"}, 2.0)
    sched.on_success("parent", 1, {"output": "ok"}, 3.0)
    assert sched.finished and sched.status() == MissionStatus.SUCCEEDED
    with pytest.raises(ValueError, match="already in the mission"):
        sched.add_task(child, delegated_by="parent", now_s=4.0)
    with pytest.raises(ValueError, match="no agent serves"):
        sched.add_task(TaskSpec(id="x", description="x", role="ghost"), delegated_by="parent", now_s=4.0)


def test_a_task_result_shows_its_loop_transcript_and_call_counts():
    sched, _ = make()
    a = sched.dispatch(0.0)[0]
    loop = {"steps": 2, "tool_calls": 1, "stop_cause": None,
            "tool_records": [{"tool": "calculator", "status": "ok", "arguments_digest": "ab12"}]}
    assert sched.on_success(a.task, a.attempt, {"output": {"n": 2}, "model_calls": 2, "tool_calls": 1,
                                                "loop": loop}, 1.0)
    record = sched.tasks[a.task].to_dict()
    assert (record["model_calls"], record["tool_calls"]) == (2, 1)
    assert record["loop"]["tool_records"][0]["tool"] == "calculator"


def test_a_held_task_keeps_its_dependents_waiting_until_released_and_they_get_the_replaced_context():
    sched, _ = make()
    [draft] = sched.dispatch(0.0)
    sched.hold("draft")  # a conflict on the draft's finding was reported before its result came back
    ok(sched, draft, 1.0, out="the draft")
    assert sched.dispatch(1.0) == []
    sched.replace_context("draft", "the settled finding")
    sched.release("draft", 2.0)
    [review] = sched.dispatch(2.0)
    assert review.task == "review" and sched.context_for("review") == {"draft": "the settled finding"}


def test_holding_a_task_that_already_succeeded_holds_only_dependents_not_yet_started():
    sched, _ = make(fan(2, concurrency=1, agents=3))
    ok(sched, sched.dispatch(0.0)[0], 1.0)
    started = {a.task: a for a in sched.dispatch(1.0)}
    assert sorted(started) == ["w0", "w1"]
    ok(sched, started["w0"], 2.0)
    sched.hold("w0")
    sched.hold("w0")  # holds nest
    ok(sched, started["w1"], 3.0)
    assert sched.dispatch(3.0) == []
    sched.release("w0", 4.0)
    assert sched.dispatch(4.0) == []
    sched.release("w0", 5.0)
    assert [a.task for a in sched.dispatch(5.0)] == ["join"]


def test_a_held_agent_gets_no_task_until_released_and_its_role_peers_take_them():
    sched, _ = make(fan(4, concurrency=2, agents=2))
    ok(sched, sched.dispatch(0.0)[0], 1.0)  # root on a0
    sched.hold_agent("a0")  # its actor is restarting
    assert {a.agent for a in sched.dispatch(1.0)} == {"a1"}  # two workers' tasks, both on a1
    assert sched.dispatch(1.5) == []  # a1 is full; a0 is held, so the rest wait instead of failing on it
    sched.release_agent("a0")
    assert {a.agent for a in sched.dispatch(2.0)} == {"a0"}
