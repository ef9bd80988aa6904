"""The mission spec: pydantic models loaded from YAML, checked across fields before anything starts.

Every problem becomes a `SpecError` whose `where` is the file and the YAML path
(`missions/x.yaml: tasks[2].depends_on[0]`), so the user can go straight to the line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controlplane.config._graph import find_cycle, format_cycle
from controlplane.config._tools import (
    AgentActing,
    DelegationLimits,
    McpServerDecl,
    ToolDecl,
    credential_values,
    tool_problems,
)
from controlplane.config._yaml import as_file_path, read_yaml
from controlplane.config.memory import MemoryConfig
from controlplane.errors import SpecError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RESERVED_AGENT_NAMES = ("supervisor", "planner", "control-plane", "memory-judge")
"""Names a mission spec may not give an agent: the control plane's own identities use them (the memory
actor's contradiction judge calls the router as `memory-judge`)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Model):
    """What Ray reserves for one agent actor."""

    num_cpus: float = Field(0.25, ge=0, description="Logical CPUs reserved for the agent actor.")
    num_gpus: float = Field(0, ge=0, description="GPUs for the agent actor; fractions such as 0.25 share a GPU.")


class MemoryAccess(_Model):
    """The memory namespaces an agent may read and write."""

    read: list[str] = Field(default_factory=lambda: ["shared"], description="Namespaces the agent may search.")
    write: list[str] = Field(default_factory=lambda: ["shared"], description="Namespaces the agent may post to.")


class AgentBudget(_Model):
    """Hard caps of one agent, enforced at the router beside the mission's."""

    max_tokens: int | None = Field(None, ge=1, description="Prompt + completion tokens of the agent's calls.")
    max_usd: float | None = Field(None, gt=0, description="USD of the agent's calls, at the serving config's prices.")


class AgentSpec(AgentActing):
    """One agent: a role played by one Ray actor. It acts through its tools (see `AgentActing`)."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique agent name; the actor is `<mission>:<name>`.")
    role: str = Field(description="The role, e.g. 'copywriter'; tasks may name a role instead of an agent.")
    instructions: str = Field("", description="Goal and backstory, given to the model as the system prompt.")
    model: str = Field("default", description="The router model this agent calls.")
    memory: MemoryAccess = Field(default_factory=MemoryAccess, description="Namespaces it may read and write.")
    resources: Resources = Field(default_factory=Resources, description="Ray resources for the agent actor.")
    max_concurrency: int = Field(1, ge=1, le=64, description="Tasks this agent may run at once.")
    max_tokens: int = Field(256, ge=1, le=8192, description="Output tokens per model call.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    memory_k: int = Field(3, ge=0, le=20, description="Memory hits put into the prompt with `fixed_memory`.")
    memory_min_score: float | None = Field(None, ge=-1, le=1, description=(
        "With `fixed_memory`: leave out hits whose cosine similarity to the task text is below this (e.g. 0.3); "
        "None puts the top `memory_k` into the prompt whatever their score."))
    budget: AgentBudget | None = Field(None, description="The agent's own token and USD caps; None = only the "
                                       "mission's.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_AGENT_NAMES:
            raise PydanticCustomError("reserved_name", "the name is reserved for the control plane's own identities "
                                      "{reserved}, so an agent named so could pass for them",
                                      {"reserved": list(RESERVED_AGENT_NAMES)})
        return name


class TaskSpec(_Model):
    """One node of the mission DAG."""

    id: str = Field(pattern=NAME_PATTERN, description="Unique task id.")
    description: str = Field(min_length=1, description="What the agent must do.")
    agent: str | None = Field(None, description="The agent that runs it (or give `role`).")
    role: str | None = Field(None, description="Any agent with this role may run it (instead of `agent`).")
    depends_on: list[str] = Field(default_factory=list, description="Task ids whose results it needs.")
    expected_output: str | dict[str, Any] | None = Field(
        None, description="A text description, or a JSON schema for structured output.")
    retries: int = Field(1, ge=0, le=10, description="Extra attempts after a failure, with backoff.")
    timeout_s: float = Field(120.0, gt=0, description="Wall time allowed per attempt.")
    fallback_agent: str | None = Field(None, description="Agent that takes the task when retries run out.")
    topic: str | None = Field(None, description="Memory topic its finding is posted on (default: the task id); "
                              "findings of different agents on one topic are checked for contradictions.")
    max_steps: int | None = Field(None, ge=1, le=100, description="Overrides the agent's max_steps for this task.")
    max_tool_calls: int | None = Field(None, ge=0, le=1000, description="Overrides the agent's max_tool_calls.")

    @model_validator(mode="after")
    def _agent_or_role(self) -> TaskSpec:
        if (self.agent is None) == (self.role is None):
            raise ValueError(f"give exactly one of `agent` or `role` (agent={self.agent!r}, role={self.role!r})")
        return self


class Budgets(_Model):
    """Hard caps; a mission that reaches one stops gracefully and keeps its partial results."""

    max_tokens: int | None = Field(None, ge=1, description="Prompt + completion tokens over the mission, charged "
                                   "at the router (failed, cancelled, planner and judge calls too).")
    max_usd: float | None = Field(None, gt=0, description="USD over the mission at the serving config's prices, "
                                  "charged at the router.")
    max_llm_calls: int | None = Field(None, ge=1, description="Model calls over the mission.")
    max_wall_s: float | None = Field(None, gt=0, description="Wall time of the mission in seconds.")


class ConflictPolicy(_Model):
    """How the supervisor settles a contradiction the memory actor reports."""

    policy: Literal["resolver", "majority", "priority"] = Field(
        "priority", description="resolver: an agent critiques and synthesises; majority: most agents on the "
        "topic win; priority: the agent whose role ranks first wins.")
    resolver_agent: str | None = Field(None, description="The agent that resolves (policy resolver).")
    role_priority: list[str] = Field(default_factory=list, description="Roles, highest priority first.")
    settle_before_dependents: bool = Field(
        True, description="A task's memory post waits for its contradiction check, and the dependents of a task "
        "whose finding is in a conflict start only once it is settled, with the finding that stands as their "
        "context. Off: checks run in the background, and dependents may start on the overruled finding.")


class Policies(_Model):
    """Mission-wide failure, retry and conflict behaviour."""

    on_failure: Literal["fail_mission", "skip_dependents"] = Field(
        "fail_mission", description="After retries and fallback: stop the mission, or skip what depends on it.")
    retry_backoff_s: float = Field(0.5, ge=0, description="Wait before the first retry; doubles each attempt.")
    retry_backoff_max_s: float = Field(10.0, ge=0, description="Upper bound of the retry wait.")
    conflicts: ConflictPolicy = Field(default_factory=ConflictPolicy, description="Conflict resolution.")
    log_content: bool = Field(False, description="Log prompts and outputs (off: they stay out of logs).")
    critical_path_first: bool = Field(True, description="Each model call carries its task's slack in the DAG, "
                                      "and the router serves a mission's waiting calls with less slack first "
                                      "(off: first come, first served).")
    approve: list[str] = Field(default_factory=list, description="Tool names or globs (`files.*`) whose every call "
                               "waits for a human approval, beside tools declared with `approval: required`.")
    approve_plan: bool = Field(False, description="With `plan: auto`: the planner's tasks wait for a human approval "
                               "before any of them runs; a denial fails the mission.")
    approval_timeout_s: float = Field(300.0, gt=0, le=86_400, description="How long a call or plan waits for a "
                                      "decision before it counts as denied.")


class PlacementSpec(_Model):
    """How the mission's agents are reserved on the cluster: together, in one placement group."""

    strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "SPREAD", description="Placement-group strategy of the agents' bundles: PACK (as few nodes as possible), "
        "SPREAD (across nodes, best effort) or STRICT_SPREAD (each agent on its own node, or wait).")
    timeout_s: float = Field(300.0, gt=0, description="How long the mission waits for the cluster (and its "
                             "autoscaler) to place every agent before it fails, naming what is missing.")


class PlannerSpec(_Model):
    """The LLM planner used with `plan: auto`."""

    model: str = Field("default", description="Router model for the planner call.")
    max_tasks: int = Field(9, ge=1, le=50, description="Upper bound on generated tasks.")
    max_tokens: int = Field(512, ge=16, description="Output tokens for the planner call.")


class MissionSpec(_Model):
    """A mission: a goal, the agents, and either declared tasks or `plan: auto`."""

    name: str = Field(pattern=NAME_PATTERN, description="Mission name; the mission id starts with it.")
    goal: str = Field(min_length=1, description="What the mission must achieve.")
    agents: list[AgentSpec] = Field(min_length=1, description="The agents.")
    tasks: list[TaskSpec] = Field(default_factory=list, description="The DAG; empty with `plan: auto`.")
    plan: Literal["declared", "auto"] = Field("declared", description="`auto`: the planner writes the tasks.")
    planner: PlannerSpec = Field(default_factory=PlannerSpec, description="Planner settings for `plan: auto`.")
    budgets: Budgets = Field(default_factory=Budgets, description="Hard caps.")
    policies: Policies = Field(default_factory=Policies, description="Failure, retry and conflict policies.")
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="The mission's memory actor, e.g. "
                                 "judge_model; data_dir defaults under the run dir.")
    serving: str | None = Field(None, description="Serving config YAML (relative to the mission file); "
                                "default: the serving package's default.yaml.")
    tools: list[ToolDecl] = Field(default_factory=list, description="Python function tools the agents may "
                                  "call, by import path; agents list the ones they may use.")
    mcp_servers: list[McpServerDecl] = Field(default_factory=list, description="MCP servers started once per "
                                             "mission; their tools are `<server>.<tool>`.")
    workspace: str | None = Field(None, description="The folder the file tools may read (relative to the mission "
                                  "file); nothing outside it is reachable.")
    delegation: DelegationLimits = Field(default_factory=DelegationLimits, description="Bounds on tasks agents "
                                         "add with the `delegate` tool.")
    placement: PlacementSpec = Field(default_factory=PlacementSpec, description="Gang placement of the agents: "
                                     "strategy and how long to wait for resources.")

    @model_validator(mode="after")
    def _cross_check(self) -> MissionSpec:
        check_mission(self)
        return self

    def agent(self, name: str) -> AgentSpec:
        return next(a for a in self.agents if a.name == name)


def check_mission(spec: MissionSpec) -> None:
    """Raise SpecError (where = YAML path) for the cross-field problems: the first, with the others in `also`."""
    problems = [*_unique_problems(spec), *_task_problems(spec), *_policy_problems(spec),
                *tool_problems(agents=spec.agents, tools=spec.tools, mcp_servers=spec.mcp_servers),
                *_plan_problems(spec)]
    if problems:
        raise SpecError.of(problems)


def _plan_problems(spec: MissionSpec) -> Iterator[SpecError]:
    if spec.plan == "declared" and not spec.tasks:
        yield SpecError(where="tasks", value=[], why="a mission needs tasks, or `plan: auto`",
                        fix="declare tasks, or set `plan: auto` to let the planner write them")
    if spec.plan == "auto" and spec.tasks:
        yield SpecError(where="plan", value="auto", why=f"`plan: auto` and {len(spec.tasks)} declared tasks "
                        "exclude each other", fix="remove `tasks`, or remove `plan: auto`")
    # A task that depends on itself, or an id used twice, is already a problem of its own, not also a cycle.
    graph = {t.id: [d for d in t.depends_on if d != t.id] for t in spec.tasks}
    cycle = find_cycle(graph) if len(graph) == len(spec.tasks) else None
    if cycle:
        i = next(i for i, t in enumerate(spec.tasks) if t.id == cycle[0])
        yield SpecError(where=f"tasks[{i}]({cycle[0]}).depends_on", value=format_cycle(cycle),
                        why="the dependencies form a cycle", fix="remove one dependency of the cycle")


def _unique_problems(spec: MissionSpec) -> Iterator[SpecError]:
    for field, items, key in (("agents", spec.agents, "name"), ("tasks", spec.tasks, "id")):
        seen: set[str] = set()
        for i, item in enumerate(items):
            value = getattr(item, key)
            if value in seen:
                yield SpecError(where=f"{field}[{i}].{key}", value=value, why=f"the {key} is used twice",
                                fix=f"give each of {field} a unique {key}")
            seen.add(value)


def _task_problems(spec: MissionSpec) -> Iterator[SpecError]:
    agents = [a.name for a in spec.agents]
    roles = sorted({a.role for a in spec.agents})
    ids = [t.id for t in spec.tasks]
    known = set(ids)  # a list lookup per dependency made checking a 50k-task mission take minutes
    for i, task in enumerate(spec.tasks):
        at = f"tasks[{i}]({task.id})"
        if task.agent is not None and task.agent not in agents:
            yield _unknown(f"{at}.agent", task.agent, "agent", agents)
        if task.role is not None and task.role not in roles:
            yield _unknown(f"{at}.role", task.role, "role", roles)
        if task.fallback_agent is not None and task.fallback_agent not in agents:
            yield _unknown(f"{at}.fallback_agent", task.fallback_agent, "agent", agents)
        for j, dep in enumerate(task.depends_on):
            if dep == task.id:
                yield SpecError(where=f"{at}.depends_on[{j}]", value=dep, why="a task cannot depend on itself",
                                fix="remove it from depends_on")
            elif dep not in known:
                yield _unknown(f"{at}.depends_on[{j}]", dep, "task", ids)


def _policy_problems(spec: MissionSpec) -> Iterator[SpecError]:
    conflicts = spec.policies.conflicts
    agents = [a.name for a in spec.agents]
    roles = sorted({a.role for a in spec.agents})
    where = "policies.conflicts"
    if conflicts.policy == "resolver" and conflicts.resolver_agent is None:
        yield SpecError(where=f"{where}.resolver_agent", value=None, why="policy `resolver` needs an agent",
                        fix=f"set resolver_agent to one of {agents}")
    if conflicts.resolver_agent is not None and conflicts.resolver_agent not in agents:
        yield _unknown(f"{where}.resolver_agent", conflicts.resolver_agent, "agent", agents)
    for i, role in enumerate(conflicts.role_priority):
        if role not in roles:
            yield _unknown(f"{where}.role_priority[{i}]", role, "role", roles)


def _unknown(where: str, value: str, kind: str, known: list[str]) -> SpecError:
    return SpecError(where=where, value=value, why=f"no {kind} has that name; known {kind}s: {', '.join(known)}",
                     fix=f"use one of the known {kind}s, or declare it")



def load_mission(path: str | Path) -> MissionSpec:
    """Read and validate a mission YAML file; any problem raises `SpecError` naming file and YAML path."""
    path = as_file_path(path, fix="pass the path of a mission YAML file, or pass a dict to parse_mission(dict)")
    data = read_yaml(path, expected="a mission YAML file, e.g. missions/product_launch.yaml")
    if not isinstance(data, dict):
        raise SpecError(where=str(path), value="<empty>" if data is None else type(data).__name__,
                        why="a mission must be a YAML mapping", fix="start the file with `name:`, `goal:`, `agents:` "
                        "and `tasks:`")
    spec = parse_mission(data, source=str(path))
    relative = {field: str((path.parent / value).resolve()) for field in ("serving", "workspace")
                if (value := getattr(spec, field)) and not Path(value).is_absolute()}
    return spec.model_copy(update=relative) if relative else spec


def parse_mission(data: dict[str, Any], *, source: str = "<mission>") -> MissionSpec:
    """Validate a mission given as a dict; errors name `source` and the YAML path."""
    if not isinstance(data, Mapping | MissionSpec):
        raise TypeError(f"data of type {type(data).__name__} is not a mission's mapping. Fix: pass a dict, or read "
                        "a mission YAML file with load_mission(path)")
    try:
        return MissionSpec.model_validate(data)
    except SpecError as exc:
        raise exc.located(f"{source}: ") from None
    except ValidationError as exc:
        raise SpecError.from_validation(exc, where=f"{source}: ", data=data, fixes=_FIXES, quote=_quotable,
                                        fix="correct the value", model=MissionSpec) from None


_MAPPING_FIX = "write a YAML mapping: `key: value` lines, or `{key: value}`"
_FIXES = {
    "missing": "add the field",
    "extra_forbidden": "remove it, or check its spelling against the mission spec in the README",
    "string_pattern_mismatch": "use letters, digits, '_', '.' and '-' only, starting with a letter or digit",
    "reserved_name": "rename the agent (e.g. add a suffix: `-agent`) and the tasks that name it",
    "list_type": "write a YAML list: `[a, b]`, or one `- item` per line (a single item too: `[a]`)",
    "dict_type": _MAPPING_FIX,
    "model_type": _MAPPING_FIX,
    "string_type": "write text; quote it where YAML would read a number, true/false or a date (`\"5\"`)",
    "int_parsing": "write a whole number",
    "float_parsing": "write a number",
    "bool_parsing": "write true or false",
}


def _quotable(value: Any) -> Any:
    """The rejected input as the error may quote it, with what may hold an MCP server's credentials left out: the
    values of its `env` and `headers`, and an argument or URL that passes one."""
    if isinstance(value, list):
        return [_quotable(item) for item in value]
    if not isinstance(value, dict):
        return value
    hidden = {path for path, _ in credential_values(value)}
    quoted = {key: _quotable(item) for key, item in value.items()}
    for key in ("env", "headers"):
        if isinstance(value.get(key), dict):
            quoted[key] = {name: "<not shown>" for name in value[key]}
    if isinstance(value.get("args"), list):
        quoted["args"] = ["<not shown>" if f"args[{index}]" in hidden else arg
                          for index, arg in enumerate(value["args"])]
    if "url" in hidden:
        quoted["url"] = "<not shown>"
    return quoted
