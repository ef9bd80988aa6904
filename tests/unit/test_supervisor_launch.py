"""An attempt the supervisor cannot send to its agent fails as an attempt, and is retried. Before, the scheduler
counted it as running and the mission waited for it forever.

The real SupervisorActor class runs in process, on a mission log in tmp_path; only its agent is a stand-in."""

import asyncio

import pytest

from controlplane import parse_mission
from controlplane._core.events import MissionStatus
from tests.helpers.inprocess_supervisor import run_supervised


class UnsendableAgent:
    """An agent handle whose `run.remote(...)` raises, as Ray does for an argument that does not serialise."""

    def __init__(self) -> None:
        self.run, self.sends = self, 0

    def remote(self, *args, **kwargs):
        self.sends += 1
        raise TypeError("cannot pickle '_thread.lock' object")


@pytest.mark.timeout(60)
def test_an_attempt_that_cannot_be_sent_fails_and_is_retried_instead_of_hanging(tmp_path):
    spec = parse_mission({"name": "unsendable", "goal": "show it", "policies": {"retry_backoff_s": 0.01},
                          "agents": [{"name": "a", "role": "worker", "model": "m", "resources": {"num_cpus": 0}}],
                          "tasks": [{"id": "t1", "agent": "a", "description": "anything", "retries": 1}]})
    agent = UnsendableAgent()
    sched, _ = asyncio.run(asyncio.wait_for(
        run_supervised(spec, {"a": agent}, str(tmp_path), mission_id="m-unsendable"), 30))
    assert sched.status() == MissionStatus.FAILED
    assert agent.sends == 2  # the attempt and its retry
    assert "cannot pickle" in sched.tasks["t1"].error
