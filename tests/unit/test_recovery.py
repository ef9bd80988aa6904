"""Recovery from the mission log: cut anywhere, a resumed mission never runs a finished task again and runs
every interrupted attempt again under the same attempt key; tool calls with side effects happen once."""

import random

import pytest

from controlplane._core.events import EventLog, MissionStatus, TaskStatus
from controlplane._core.mission_log import attempt_key, digest, make_record, verify
from controlplane._core.recovery import Execute, Refuse, Replay, ToolCallJournal, rebuild_scheduler, replay
from controlplane._core.scheduler import Scheduler
from controlplane._logfile import DurableEventLog
from controlplane.config.mission import parse_mission
from tests.helpers import mission

MID = "m1"


class ListWriter:
    """The writer's interface over a list: the chain without the disk."""

    def __init__(self, records=()):
        self.records = list(records)

    def append(self, kind, data, *, actor=None, time_s=None, commit=None, wait=True):
        prev = self.records[-1] if self.records else None
        record = make_record(prev, time_s=time_s or 0.0, actor=actor or "supervisor", kind=kind, data=data)
        self.records.append(record)
        return record


def spec_of(on_failure="skip_dependents"):
    data = mission(
        agents=[{"name": f"a{i}", "role": "worker", "max_concurrency": 2} for i in range(3)],
        tasks=[{"id": "root", "description": "r", "agent": "a0", "retries": 2, "fallback_agent": "a1"}]
        + [{"id": f"w{i}", "description": "w", "role": "worker", "depends_on": ["root"], "retries": 2}
           for i in range(6)]
        + [{"id": "join", "description": "j", "agent": "a2", "depends_on": [f"w{i}" for i in range(6)]}],
        policies={"on_failure": on_failure, "retry_backoff_s": 1.0})
    return parse_mission(data)


def run(sched, writer, rng, now, running=(), fail_p=0.25):
    """Drive a scheduler to the end: results in random order, some failures. Returns dispatched assignments."""
    running, dispatched = list(running), []
    while not sched.finished:
        new = sched.dispatch(now)
        dispatched += new
        running += new
        if running:
            a = running.pop(rng.randrange(len(running)))
            if rng.random() < fail_p:
                sched.on_failure(a.task, a.attempt, "boom", now)
            else:
                sched.on_success(a.task, a.attempt, {"output": f"{a.task}@{a.attempt}", "prompt_tokens": 1,
                                                     "completion_tokens": 2}, now)
        now += 1.0
    writer.append("mission.status", {"status": str(sched.status())}, time_s=now)
    return dispatched


def original_log(seed):
    spec, writer = spec_of(), ListWriter()
    writer.append("mission.start", {"mission_id": MID, "name": spec.name, "spec": spec.model_dump(mode="json"),
                                    "format": 1})
    sched = Scheduler(spec.tasks, spec.agents, spec.policies, DurableEventLog(MID, writer), 0.0)
    run(sched, writer, random.Random(seed), 0.0)
    return spec, writer.records


def resume(spec, records, seed):
    """What a restarted supervisor does: replay, rebuild, log the relaunches, run on (without failures)."""
    state = replay(records)
    writer = ListWriter(records)
    events = DurableEventLog(MID, writer)
    now = records[-1].time_s + 1.0
    sched, relaunch = rebuild_scheduler(state, state.task_specs(spec.tasks), spec.agents, spec.policies, events, now)
    resumed = [r.data["task"] for r in writer.records[len(records):] if r.data.get("resumed")]
    assert resumed == [a.task for a in relaunch]  # each relaunch is logged, marked as resumed
    dispatched = run(sched, writer, random.Random(seed), now, running=relaunch, fail_p=0.0)
    return state, sched, relaunch, dispatched, writer.records


@pytest.mark.parametrize("seed", range(4))
def test_a_log_cut_anywhere_resumes_without_rerunning_finished_tasks(seed):
    spec, full = original_log(seed)
    for cut in sorted(random.Random(seed).sample(range(1, len(full)), 25)):
        state, sched, relaunch, dispatched, records = resume(spec, full[:cut], seed)
        if state.finished:
            continue
        done = state.completed()
        assert not {a.task for a in dispatched} & set(done), f"cut {cut}: a finished task ran again"
        for task, saved in done.items():
            assert sched.tasks[task].output == saved.output
        flying = state.in_flight()
        assert {a.task: a.attempt for a in relaunch} == {t: s.attempts for t, s in flying.items()}
        assert {attempt_key(MID, a.task, a.attempt) for a in relaunch} == {s.attempt_key for s in flying.values()}
        assert verify(records).ok
        succeeded = [r.data["task"] for r in records if r.kind == "task.succeeded"]
        assert len(succeeded) == len(set(succeeded)), f"cut {cut}: a task succeeded twice"
        final = replay(records)
        assert final.finished and final.spec["name"] == spec.name and final.started_s == full[0].time_s
        for task, record in sched.tasks.items():  # the log alone reproduces the live counters and outputs
            mirror = final.tasks[task]
            assert (mirror.attempts, mirror.round_attempts, mirror.output, str(mirror.status)) == (
                record.attempts, record.round_attempts, record.output, str(record.status))


def test_replay_keeps_the_conflicts_detected_and_not_yet_settled():
    writer = ListWriter()
    for entries in ([1, 2], [3, 4], [5, 6]):
        writer.append("conflict.detected", {"topic": "t", "entries": entries, "similarity": 0.9}, time_s=1.0)
    writer.append("conflict.decision", {"topic": "t", "policy": "priority", "winner": "a0", "text": "x",
                                        "reason": "r", "agents": ["a0", "a1"], "entries": [1, 2]}, time_s=2.0)
    writer.append("conflict.unresolved", {"message": "boom", "entries": [5, 6]}, time_s=2.0)
    writer.append("conflict.decision", {"topic": "t", "policy": "priority", "winner": "a0", "text": "x",
                                        "reason": "r", "agents": ["a0", "a1"]}, time_s=2.0)  # an older log's
    state = replay(writer.records)
    assert list(state.open_conflicts) == [(3, 4)] and state.open_conflicts[(3, 4)]["similarity"] == 0.9
    assert len(state.conflicts) == 2


def test_replay_keeps_counters_times_fallback_and_budget():
    spec = spec_of()
    writer = ListWriter()
    sched = Scheduler(spec.tasks, spec.agents, spec.policies, DurableEventLog(MID, writer), 0.0)
    a = sched.dispatch(0.0)[0]
    sched.on_failure(a.task, a.attempt, "boom", 1.0)
    writer.append("budget.charge", {"agent": "a0", "tokens": 30, "usd": 0.5}, time_s=1.0)
    writer.append("conflict.decision", {"topic": "t", "policy": "priority", "winner": "a0", "text": "x",
                                        "reason": "r", "agents": ["a0", "a1"]}, time_s=1.0)
    state = replay(writer.records)
    root = state.tasks["root"]
    assert (root.status, root.attempts, root.round_attempts, root.retry_at_s) == ("retrying", 1, 1, 2.0)
    assert state.budget.tokens == 30 and state.budget.usd == 0.5 and state.budget.tokens_by_agent == {"a0": 30}
    assert state.conflicts[0]["winner"] == "a0"
    resumed, relaunch = rebuild_scheduler(state, spec.tasks, spec.agents, spec.policies, EventLog(MID), 1.5)
    assert relaunch == [] and resumed.dispatch(1.9) == [] and resumed.next_wakeup_s() == 2.0
    for _ in range(2):  # retries=2 counts the attempt before the restart: two more, then the fallback agent
        now = resumed.next_wakeup_s()
        b = resumed.dispatch(now)[0]
        assert b.agent == "a0"
        resumed.on_failure(b.task, b.attempt, "boom", now + 0.5)
    b = resumed.dispatch(resumed.next_wakeup_s() or 100.0)[0]
    assert (b.agent, b.attempt) == ("a1", 4)


def test_delegated_tasks_are_scheduled_after_a_resume():
    spec = spec_of()
    writer = ListWriter()
    writer.append("task.delegate", {"parent": "root", "by_agent": "a0",
                                    "task": {"id": "extra", "description": "more", "agent": "a1"}})
    state = replay(writer.records)
    tasks = state.task_specs(spec.tasks)
    assert [t.id for t in tasks][-1] == "extra"
    sched, _ = rebuild_scheduler(state, tasks, spec.agents, spec.policies, EventLog(MID), 0.0)
    assert {a.task for a in sched.dispatch(0.0)} == {"root", "extra"}


def test_a_failure_whose_policy_was_cut_off_is_applied_on_resume():
    spec = spec_of(on_failure="fail_mission")
    writer = ListWriter()
    sched = Scheduler(spec.tasks, spec.agents, spec.policies, DurableEventLog(MID, writer), 0.0)
    a = sched.dispatch(0.0)[0]
    writer.append("task.failed", {"task": a.task, "agent": a.agent, "attempt": a.attempt, "error": "fatal"})
    events = EventLog(MID)
    resumed, relaunch = rebuild_scheduler(replay(writer.records), spec.tasks, spec.agents, spec.policies, events, 1.0)
    assert relaunch == [] and resumed.finished and resumed.status() == MissionStatus.FAILED
    assert resumed.tasks["join"].status == TaskStatus.CANCELLED
    assert {e.task for e in events.events if e.status == "cancelled"} == {"join", *(f"w{i}" for i in range(6))}


def test_approvals_are_recovered_with_their_decisions():
    from dataclasses import asdict

    from controlplane._core.approvals import ApprovalDesk

    desk, writer = ApprovalDesk(), ListWriter()
    first = desk.request("m1/t/1/call/0", agent="a0", tool="send_email", arg_digest="sha256:1", now_s=1.0,
                         timeout_s=60.0)
    writer.append("approval.request", asdict(first))
    second = desk.request("m1/t/1/call/1", agent="a0", tool="send_email", arg_digest="sha256:2", now_s=2.0,
                          timeout_s=60.0)
    writer.append("approval.request", asdict(second))
    writer.append("approval.decision", asdict(desk.approve(first.id, by="ana", now_s=3.0, reason="ok")))
    approvals = replay(writer.records).approvals
    assert list(approvals) == [first.id, second.id]
    assert approvals[first.id]["status"] == "approved" and approvals[first.id]["decided_by"] == "ana"
    assert approvals[second.id]["status"] == "pending"


def test_a_cancel_and_a_final_status_are_recovered():
    writer = ListWriter()
    writer.append("mission.cancel", {"reason": "stop it", "by": "cli"})
    state = replay(writer.records)
    assert state.cancel_reason == "stop it" and not state.finished
    writer.append("mission.status", {"status": "cancelled", "message": "stop it"})
    assert replay(writer.records).finished


# -- tool calls: exactly once for side effects ------------------------------------------------------------
def journal_with(*records):
    writer, journal = ListWriter(), ToolCallJournal()
    for kind, data in records:
        journal.apply(writer.append(kind, data))
    return journal


def intent(key, side_effects=True, idempotent=False, args=None):
    return ("tool.intent", {"call_key": key, "tool": "send_email", "task": "t", "attempt_key": "m1/t/1",
                            "call_index": 0, "args_digest": digest(args or {"to": "a"}),
                            "side_effects": side_effects, "idempotent": idempotent})


def result(key, value="sent", outcome="ok"):
    return ("tool.result", {"call_key": key, "tool": "send_email", "outcome": outcome, "result": value,
                            "result_digest": digest(value), "duration_s": 0.1})


def test_a_finished_side_effect_is_replayed_not_executed_again():
    key = ToolCallJournal.key("m1/t/1", 0)
    journal = journal_with(intent(key), result(key, "message-id 42"))
    decision = journal.decide(key, args_digest=digest({"to": "a"}))
    assert decision == Replay(result="message-id 42", outcome="ok", args_match=True)
    assert journal.decide(key, args_digest=digest({"to": "b"})).args_match is False


def test_an_interrupted_side_effect_is_refused_unless_idempotent():
    key = ToolCallJournal.key("m1/t/1", 0)
    refused = journal_with(intent(key)).decide(key)
    assert isinstance(refused, Refuse)
    for part in ("send_email", key, "side_effects: true", "not idempotent", "Fix:", digest({"to": "a"})):
        assert part in refused.reason
    assert isinstance(journal_with(intent(key, idempotent=True)).decide(key), Execute)


def test_calls_without_side_effects_or_without_a_record_execute():
    key = ToolCallJournal.key("m1/t/1", 3)
    assert isinstance(journal_with().decide(key), Execute)
    assert isinstance(journal_with(intent(key, side_effects=False)).decide(key), Execute)


def test_the_journal_is_rebuilt_by_replay_and_refuses_a_call_in_doubt():
    k0, k1 = ToolCallJournal.key("m1/t/1", 0), ToolCallJournal.key("m1/t/1", 1)
    writer = ListWriter()
    for kind, data in (intent(k0), result(k0, "failed: 550", outcome="error"), intent(k1)):
        writer.append(kind, data)
    state = replay(writer.records)
    assert state.tools.decide(k0) == Replay(result="failed: 550", outcome="error", args_match=True)
    assert isinstance(state.tools.decide(k1), Refuse)  # in flight at the crash, with side effects
