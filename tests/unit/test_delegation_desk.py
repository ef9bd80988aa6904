import asyncio

import pytest

from actors._delegation import DelegationDesk
from controlplane._core.events import EventLog
from controlplane._core.scheduler import Scheduler
from controlplane.config.mission import parse_mission
from controlplane.errors import ToolError
from tests.helpers import mission


def desk(**changes):
    spec = parse_mission(mission(**changes))
    sched = Scheduler(spec.tasks, spec.agents, spec.policies, EventLog("m"), now_s=0.0)
    wakes = []
    return DelegationDesk(spec, scheduler=lambda: sched, is_agent=lambda name: name in {a.name for a in spec.agents},
                          wake=lambda: wakes.append(1)), sched, wakes


async def delegating(delegation, to, description):
    """The draft task delegates to `to`; returns its wait, once the child task is in the DAG."""
    waiting = asyncio.ensure_future(delegation.delegate("draft", to, description))
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
            await delegation.delegate("ghost", "reviewer", "x")
        waiting = await delegating(delegation, "checker", "check it")
        assert sched.tasks["draft.d1"].spec.agent == "checker"
        with pytest.raises(ToolError, match="depth"):  # max_depth 1: a child may not delegate again
            await delegation.delegate("draft.d1", "reviewer", "x")
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
