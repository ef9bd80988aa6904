"""actors: the Ray shells of the mission runtime (supervisor, agents) and the driver helpers."""

from actors._agent import AgentActor
from actors._governance import approvals, approve, deny, stop_all
from actors._launch import (
    find_supervisor,
    follow,
    new_mission_id,
    running_missions,
    start_mission,
)
from actors._names import MISSION_NAMESPACE
from actors._supervisor import SupervisorActor

__all__ = [
    "AgentActor",
    "MISSION_NAMESPACE",
    "SupervisorActor",
    "approvals",
    "approve",
    "deny",
    "find_supervisor",
    "follow",
    "new_mission_id",
    "running_missions",
    "start_mission",
    "stop_all",
]
