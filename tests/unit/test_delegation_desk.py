import asyncio

import pytest

from actors._delegation import DelegationDesk
from controlplane._core.events import EventLog
from controlplane._core.mission_log import event_record, make_record
from controlplane._core.recovery import replay
from controlplane._core.scheduler import Scheduler
from controlplane.config.mission import parse_mission
from controlplane.errors import ToolError
from tests.helpers import mission


def desk(recorded=None, sched=None, **changes):
    spec = parse_mission(mission(**changes))
    sched = sched or Scheduler(spec.tasks, spec.agents, spec.policies, EventLog("m"), now_s=0.0)
    wakes = []
    return DelegationDesk(spec, scheduler=lambda: sched, is_agent=lambda name: name in {a.name for a in spec.agents},
                          wake=lambda: wakes.append(1), recorded=recorded), sched, wakes


async def delegating(delegation, to, description, call_key="m/draft/1/call/0"):
    """The draft task delegates to `to`; returns its wait, once the child task is in the DAG."""
    waiting = asyncio.ensure_future(delegation.delegate("draft", to, description, call_key=call_key))
    await asyncio.sleep(0)
    return waiting


def test_a_delegation_adds_a_child_task_and_hands_its_output_to_the_delegating_agent():
    async def run():
        delegation, sched, wakes = desk()
        sched.dispatch(0.0)
        waiting = await delegating(delegation, "reviewer", "check the tagline")
        child = sched.tasks["draft.d1"]
        assert (child.delegated_by, child.spec.role, child.spec.description) == ("draft", "reviewer",
                                                                               "check the tagline")
        assert wakes and not waiting.done()
        delegation.settle("draft")  # not a child: nothing to hand back
        (assignment,) = sched.dispatch(1.0)
        sched.on_success(assignment.task, assignment.attempt, {"output": "looks fine"}, 2.0)
        delegation.settle("draft.d1")
        assert await waiting == "looks fine"

    asyncio.run(run())


def test_a_failed_child_and_a_refused_delegation_reach_the_agent_as_tool_errors():
    async def run():
        delegation, sched, _ = desk(delegation={"max_depth": 1})
        sched.dispatch(0.0)
        with pytest.raises(ToolError, match="not running"):
            await delegation.delegate("ghost", "reviewer", "x", call_key="m/ghost/1/call/0")
        waiting = await delegating(delegation, "checker", "check it")
        assert sched.tasks["draft.d1"].spec.agent == "checker"
        with pytest.raises(ToolError, match="depth"):  # max_depth 1: a child may not delegate again
            await delegation.delegate("draft.d1", "reviewer", "x", call_key="m/draft.d1/1/call/0")
        (assignment,) = sched.dispatch(1.0)
        sched.on_failure(assignment.task, assignment.attempt, "it broke", 2.0)
        for _ in range(5):  # retries, if the policy has any
            for retry in sched.dispatch(10.0 + _):
                sched.on_failure(retry.task, retry.attempt, "it broke", 10.0 + _)
        delegation.settle("draft.d1")
        with pytest.raises(ToolError, match="'draft.d1' failed"):
            await waiting

    asyncio.run(run())


def test_the_missions_end_cancels_every_waiting_delegation():
    async def run():
        delegation, sched, _ = desk()
        sched.dispatch(0.0)
        waiting = await delegating(delegation, "reviewer", "check")
        delegation.cancel_all()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(run())


def test_after_a_restart_the_same_call_waits_for_the_child_it_added_and_the_depth_limit_still_holds():
    async def run():
        delegation, sched, _ = desk(delegation={"max_depth": 1})
        sched.dispatch(0.0)
        await delegating(delegation, "reviewer", "check the tagline")  # the supervisor dies while it waits
        [delegated] = [e for e in sched.events.events if e.status == "delegated"]
        kind, data = event_record(delegated, mission_id="m")
        recorded = replay([make_record(None, time_s=1.0, actor="supervisor", kind=kind, data=data)]).delegations
        assert recorded == {"m/draft/1/call/0": "draft.d1"}
        restarted, _, _ = desk(recorded=recorded, sched=sched, delegation={"max_depth": 1})
        again = await delegating(restarted, "reviewer", "check the tagline")  # its attempt, relaunched
        assert [t for t in sched.tasks if t.startswith("draft.")] == ["draft.d1"] and not again.done()
        with pytest.raises(ToolError, match="depth"):
            await restarted.delegate("draft.d1", "reviewer", "x", call_key="m/draft.d1/1/call/0")
        (assignment,) = sched.dispatch(1.0)
        sched.on_success(assignment.task, assignment.attempt, {"output": "looks fine"}, 2.0)
        restarted.settle("draft.d1")
        assert await again == "looks fine"
        late = await delegating(restarted, "reviewer", "check the tagline")  # one that asks after the child ended
        assert await late == "looks fine"
        other = await delegating(restarted, "reviewer", "check the logo", call_key="m/draft/1/call/1")
        assert "draft.d2" in sched.tasks and not other.done()

    asyncio.run(run())
