"""Retries follow the cause: the error class's `retryable` is the one switch, `retry_after_s` is honoured,
and a structured output cut off by max_tokens gets more room or a repair turn, never the same call."""

import inspect

import pytest

import controlplane.errors as errors
from controlplane._core.events import EventLog, TaskStatus
from controlplane._core.retry import GiveUp, Retry, RetryPolicy, retry_decision
from controlplane._core.scheduler import Scheduler
from controlplane.config.mission import parse_mission
from tests.helpers import mission

POLICY = RetryPolicy(retries=3, backoff_s=0.5, backoff_max_s=3.0, max_tokens_cap=1024)

EXAMPLES = {
    errors.SpecError: dict(where="w", value=1, why="y", fix="f"),
    errors.SetupError: dict(what="w", fix="f"),
    errors.ReplicaUnavailable: dict(model="m", why="down"),
    errors.BackpressureError: dict(scope="s", limit="rpm", retry_after_s=2.0),
    errors.BudgetExceeded: dict(scope="s", budget="max_tokens", limit=1, used=2),
    errors.AccessDenied: dict(agent="a", resource="r", granted=[]),
    errors.MissionNotFound: dict(mission_id="m", known=[]),
    errors.DeadlineExceeded: dict(what="the call", timeout_s=1.0),
    errors.OutputTruncated: dict(task="t", max_tokens=256),
    errors.ToolCallInDoubt: dict(tool="t", call_key="k", args_digest="sha256:0"),
    errors.MissionLogError: dict(uri="u", seq=1, why="w"),
    errors.RunRecordError: dict(run="r", file="result.json", why="w"),
    errors.MissionIdInUse: dict(mission_id="m", why="w", fix="f"),
    errors.MissionStopped: dict(run="runs/m", why="w"),
    errors.ApprovalDenied: dict(subject="s", approval_id="ap-1", decided_by="timeout", reason=None),
    errors.IdentityError: dict(why="forged token", fix="f"),
    errors.ScopeDenied: dict(why="x-agent-id outside the key's scope", fix="f"),
    errors.ToolError: dict(tool="t", why="it raised", fix="f"),
    errors.AgentStopped: dict(agent="a", task="t", cause="loop", why="w", fix="f"),
    errors.PlacementTimeout: dict(mission_id="m", timeout_s=4.0, strategy="STRICT_SPREAD", missing="CPU"),
}


def test_every_error_class_has_an_example():
    classes = {c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.ControlPlaneError) and c is not errors.ControlPlaneError}
    assert classes == set(EXAMPLES)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_the_error_class_retryable_is_the_only_switch(cls):
    decision = retry_decision(cls(**EXAMPLES[cls]), 1, POLICY, now_s=10.0)
    assert isinstance(decision, Retry) is cls.retryable
    if not cls.retryable:
        assert f"{cls.__name__} is not retryable" in decision.reason


def test_errors_from_outside_the_tree_are_retried_like_a_dead_actor():
    class RayActorError(Exception):  # Ray's class, without importing Ray
        pass

    assert errors.is_retryable(RayActorError()) and errors.is_retryable(ValueError("user code"))
    decision = retry_decision(RayActorError("the actor died"), 1, POLICY, now_s=10.0)
    assert decision == Retry(at_s=10.5, reason="RayActorError: backoff 0.5 s before attempt 2")


def test_backoff_doubles_up_to_its_cap_and_retries_run_out():
    waits = [retry_decision(RuntimeError(), n, POLICY, now_s=0.0).at_s for n in (1, 2, 3)]
    assert waits == [0.5, 1.0, 2.0]
    long = RetryPolicy(retries=9, backoff_s=0.5, backoff_max_s=3.0)
    assert retry_decision(RuntimeError(), 6, long, now_s=0.0).at_s == 3.0
    out = retry_decision(RuntimeError(), 4, POLICY, now_s=0.0)
    assert isinstance(out, GiveUp) and "retries used up (3 of 3)" in out.reason


def test_backpressure_waits_at_least_its_retry_after():
    slow = errors.BackpressureError(scope="model:m", limit="rpm", retry_after_s=7.0)
    assert retry_decision(slow, 1, POLICY, now_s=10.0).at_s == 17.0
    quick = errors.BackpressureError(scope="model:m", limit="rpm", retry_after_s=0.1)
    assert retry_decision(quick, 1, POLICY, now_s=10.0).at_s == 10.5  # the backoff is longer


def test_a_truncated_structured_output_gets_more_room_then_a_repair_turn():
    first = retry_decision(errors.OutputTruncated(task="t", max_tokens=256), 1, POLICY, now_s=5.0)
    assert first.at_s == 5.0 and first.changes == {"max_tokens": 512}
    capped = retry_decision(errors.OutputTruncated(task="t", max_tokens=768), 2, POLICY, now_s=5.0)
    assert capped.changes == {"max_tokens": 1024}
    repair = retry_decision(errors.OutputTruncated(task="t", max_tokens=1024), 3, POLICY, now_s=5.0)
    assert repair.changes == {"max_tokens": 1024, "repair_turn": True} and "repair" in repair.reason


def scheduler():
    data = mission(policies={"retry_backoff_s": 0.5, "retry_backoff_max_s": 3.0})
    data["tasks"][0].update(retries=2, fallback_agent="checker")
    spec = parse_mission(data)
    log = EventLog("m1")
    return Scheduler(spec.tasks, spec.agents, spec.policies, log, 0.0), log


def test_the_scheduler_retries_as_the_cause_says():
    sched, log = scheduler()
    a = sched.dispatch(0.0)[0]
    sched.on_failure(a.task, a.attempt, "rate limited", 1.0,
                     cause=errors.BackpressureError(scope="model:m", limit="rpm", retry_after_s=7.0))
    assert sched.next_wakeup_s() == 8.0 and log.events[-1].data["retry_at_s"] == 8.0
    b = sched.dispatch(8.0)[0]
    sched.on_failure(b.task, b.attempt, "cut off", 9.0, cause=errors.OutputTruncated(task="draft", max_tokens=256))
    c = sched.dispatch(9.0)[0]
    assert c.attempt == 3 and c.changes == {"max_tokens": 512}
    assert log.events[-1].data["changes"] == {"max_tokens": 512}


def test_a_cause_that_cannot_succeed_goes_straight_to_the_fallback():
    sched, log = scheduler()
    a = sched.dispatch(0.0)[0]
    sched.on_failure(a.task, a.attempt, "denied", 1.0,
                     cause=errors.AccessDenied(agent="writer", resource="legal", granted=[]))
    assert log.events[-2].status == "fallback" and "AccessDenied is not retryable" in log.events[-2].data["why"]
    assert sched.tasks["draft"].status == TaskStatus.READY and sched.dispatch(1.0)[0].agent == "checker"
