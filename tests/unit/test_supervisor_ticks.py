"""The supervisor's loop logs a tick that raises and goes on, and reports a slow tick with its likely cause and
fix (TickGuard judges; the actor logs). The real SupervisorActor class runs in process; its agent answers at once."""

import asyncio
import logging
import time

import pytest

from actors._conflicts import ConflictDesk
from controlplane import parse_mission
from controlplane._core.events import MissionStatus
from controlplane._core.tick_guard import SLOW_TICK_S
from tests.helpers.inprocess_supervisor import InstantAgent, run_supervised


@pytest.mark.timeout(60)
def test_a_tick_that_raises_is_logged_and_the_loop_goes_on_and_a_slow_tick_names_its_fix(tmp_path, monkeypatch,
                                                                                          caplog):
    settled = ConflictDesk.settle
    ticks = {"n": 0}

    def settle_with_one_bug_and_one_stall(desk, now):
        ticks["n"] += 1
        if ticks["n"] == 1:
            raise RuntimeError("a bug in one tick")
        if ticks["n"] == 2:
            time.sleep(SLOW_TICK_S * 2)
        return settled(desk, now)

    monkeypatch.setattr(ConflictDesk, "settle", settle_with_one_bug_and_one_stall)
    spec = parse_mission({"name": "ticks", "goal": "show it",
                          "agents": [{"name": "a", "role": "worker", "model": "m", "resources": {"num_cpus": 0}}],
                          "tasks": [{"id": f"t{i}", "agent": "a", "description": "anything"} for i in range(3)]})
    with caplog.at_level(logging.WARNING, logger="actors._supervisor"):
        sched, _ = asyncio.run(asyncio.wait_for(
            run_supervised(spec, {"a": InstantAgent()}, str(tmp_path), mission_id="m-ticks"), 30))
    assert sched.status() == MissionStatus.SUCCEEDED
    failed = [r for r in caplog.records if "supervisor tick failed; the loop goes on" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR and "a bug in one tick" in str(failed[0].exc_info)
    slow = [r.getMessage() for r in caplog.records if "slow supervisor tick" in r.getMessage()]
    assert slow and "Fix: give the supervisor a node with spare CPU" in slow[0]
