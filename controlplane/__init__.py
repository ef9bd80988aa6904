"""controlplane: a control plane for fleets of LLM agents on Ray.

This package is pure logic (mission spec, DAG, scheduler, policies, planner, report, CLI); it never
imports Ray at import time. The Ray shells live in `actors/`.
"""

from controlplane._budget import BudgetTracker
from controlplane._dag import Dag
from controlplane.errors import (
    AccessDenied,
    BackpressureError,
    BudgetExceeded,
    ControlPlaneError,
    MissionNotFound,
    ReplicaUnavailable,
    SetupError,
    SpecError,
)
from controlplane._events import Event, EventLog, MissionStatus, TaskStatus
from controlplane._model_cache import default_model_path, embedding_model_path
from controlplane._planner import Plan, plan_schema, repair_plan
from controlplane._policies import ConflictDecision, Finding
from controlplane._scheduler import Assignment, Scheduler
from controlplane._spec import (
    AgentSpec,
    Budgets,
    ConflictPolicy,
    MissionSpec,
    Policies,
    TaskSpec,
    load_mission,
    parse_mission,
)

__all__ = [
    "AccessDenied",
    "AgentSpec",
    "Assignment",
    "BackpressureError",
    "BudgetExceeded",
    "BudgetTracker",
    "Budgets",
    "ConflictDecision",
    "ConflictPolicy",
    "ControlPlaneError",
    "Dag",
    "Event",
    "EventLog",
    "Finding",
    "MissionNotFound",
    "MissionSpec",
    "MissionStatus",
    "Plan",
    "Policies",
    "ReplicaUnavailable",
    "Scheduler",
    "SetupError",
    "SpecError",
    "TaskSpec",
    "TaskStatus",
    "default_model_path",
    "embedding_model_path",
    "load_mission",
    "parse_mission",
    "plan_schema",
    "repair_plan",
]
