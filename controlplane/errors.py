"""Every error controlplane raises on purpose derives from one base, split by who must act.

    ControlPlaneError
    ├── SpecError              the user fixes a mission spec or a config file
    ├── SetupError             the user fixes the environment (missing model, missing extra)
    ├── ReplicaUnavailable     the operator fixes the cluster (no replica, backend down, breaker open); retryable
    ├── BackpressureError      a retry later may help (rate limit, full queue); carries retry_after_s
    ├── BudgetExceeded         a hard cap was reached (mission tokens, calls, wall time)
    ├── AccessDenied           an agent touched what its spec does not grant
    ├── IdentityError          a capability token or API key is missing, forged, expired or out of scope
    ├── ToolError              a tool raised, timed out, or returned what the model cannot read
    ├── AgentStopped           an agent's tool loop hit a bound (max_steps, a repeated call, invalid answers)
    ├── DeadlineExceeded       the caller's own deadline passed (not the backend's fault); retryable
    ├── OutputTruncated        a structured answer was cut off by max_tokens; retryable with more room
    ├── ToolCallInDoubt        a side-effecting call was in flight at a crash; it is not run again
    ├── MissionLogError        a mission log is corrupt or its hash chain is broken
    ├── RunRecordError         a run directory's result.json or events.jsonl cannot be read
    ├── PlacementTimeout       a mission's agents could not be reserved together in time
    └── MissionNotFound        no mission of that id is running or recorded

Errors take keyword fields and build their own message, so the message always names the
value, why it is wrong and the fix. `retryable` on the class is the only switch that decides a retry
(`is_retryable`). Ray pickles exceptions between processes; `__reduce__`
rebuilds them from their fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controlplane._pydantic_errors import read_error


class ControlPlaneError(Exception):
    """Base of all controlplane errors. Subclasses set `fields` and a message template."""

    retryable: bool = False

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))

    def __str__(self) -> str:
        return self.message


def is_retryable(error: BaseException) -> bool:
    """The one switch that decides a retry: a controlplane error's class says; anything else (a crash, a dead
    actor, a malformed reply) may succeed on another attempt."""
    return error.retryable if isinstance(error, ControlPlaneError) else True


def _rebuild(cls: type[ControlPlaneError], message: str, fields: dict[str, Any]) -> ControlPlaneError:
    error = cls.__new__(cls)
    ControlPlaneError.__init__(error, message, **fields)
    return error


LISTED_PROBLEMS = 20
"""A SpecError's message lists at most this many problems after the first."""


class SpecError(ControlPlaneError):
    """A mission spec or config is invalid. `where` is the file and YAML path. `also` holds the other problems
    found in the same check, each a SpecError; the message lists them after the first."""

    where: str
    value: Any
    why: str
    fix: str
    also: list[SpecError]

    def __init__(self, *, where: str, value: Any, why: str, fix: str, also: Sequence[SpecError] = ()) -> None:
        others = "".join(f"\nAlso: {problem.message}" for problem in also[:LISTED_PROBLEMS])
        if len(also) > LISTED_PROBLEMS:
            others += f"\n... and {len(also) - LISTED_PROBLEMS} more problems (the error's `also` holds them all)"
        super().__init__(
            f"{where}: {value!r} is invalid: {why}. Fix: {fix}{others}",
            where=where, value=value, why=why, fix=fix, also=list(also),
        )

    @classmethod
    def of(cls, problems: Sequence[SpecError]) -> SpecError:
        """One error for every problem found: the first's fields, the rest in `also`."""
        first = problems[0]
        return cls(where=first.where, value=first.value, why=first.why, fix=first.fix,
                   also=[*first.also, *problems[1:]])

    def located(self, prefix: str) -> SpecError:
        """The same problems, each `where` prefixed (e.g. with the file's name)."""
        return SpecError(where=f"{prefix}{self.where}", value=self.value, why=self.why, fix=self.fix,
                         also=[problem.located(prefix) for problem in self.also])

    @classmethod
    def from_validation(cls, exc: Any, *, where: str, fix: str, data: Any = None,
                        fixes: Mapping[str, str] | None = None,
                        quote: Callable[[Any], Any] = lambda value: value, model: Any = None) -> SpecError:
        """Every problem of a pydantic ValidationError, one per place (a union's members each report the same
        place): `where` followed by its YAML path (list items named by their `name` or `id` in `data`), the input
        as `quote` gives it (an unknown field's value is not shown), pydantic's reason, and a fix: the error's
        own where it implies one (a bound, the allowed values; with `model`, the pydantic model validated, the
        fields known at an unknown field's place and the one likeliest meant), else what `fixes` holds for its
        type, else `fix`."""
        problems: dict[str, SpecError] = {}
        for error in exc.errors(include_url=False):
            path, unquoted, own_fix = read_error(error, data=data, model=model)
            place = f"{where}{path}"
            if place not in problems:
                problems[place] = cls(where=place, value=unquoted or quote(error.get("input")),
                                      why=error["msg"].removeprefix("Value error, "),
                                      fix=own_fix or (fixes or {}).get(error["type"], fix))
        return cls.of(list(problems.values()))


class SetupError(ControlPlaneError):
    """The environment lacks something the user must install or build."""

    def __init__(self, *, what: str, fix: str) -> None:
        super().__init__(f"{what}. Fix: {fix}", what=what, fix=fix)


class ReplicaUnavailable(ControlPlaneError):
    """No healthy backend can serve a model right now; the operator must act, though a replica may come back."""

    retryable = True

    def __init__(self, *, model: str, why: str, fix: str = "check the replicas with `serve status`") -> None:
        super().__init__(f"Model {model!r} is unavailable: {why}. Fix: {fix}", model=model, why=why, fix=fix)


class BackpressureError(ControlPlaneError):
    """A limit was hit; retrying after `retry_after_s` may succeed."""

    retry_after_s: float

    retryable = True

    def __init__(self, *, scope: str, limit: str, retry_after_s: float) -> None:
        super().__init__(
            f"{scope} is over its {limit} limit; retry after {retry_after_s:.2f} s",
            scope=scope, limit=limit, retry_after_s=retry_after_s,
        )


class BudgetExceeded(ControlPlaneError):
    """A hard budget was reached; retrying does not help."""

    scope: str

    def __init__(self, *, scope: str, budget: str, limit: float, used: float) -> None:
        super().__init__(
            f"{scope} reached its {budget} budget ({used:g} used of {limit:g}). "
            f"Fix: raise budgets.{budget} in the mission spec",
            scope=scope, budget=budget, limit=limit, used=used,
        )


class AccessDenied(ControlPlaneError):
    """An agent asked for a namespace or tool its spec does not grant."""

    def __init__(self, *, agent: str, resource: str, granted: list[str]) -> None:
        super().__init__(
            f"Agent {agent!r} may not use {resource!r}; it is granted {sorted(granted)}. "
            f"Fix: add it to the agent's spec, or use a granted one",
            agent=agent, resource=resource, granted=list(granted),
        )


class MissionNotFound(ControlPlaneError):
    """No running or recorded mission has this id. `known` holds those that are; the message names the first
    LISTED_MISSIONS of them."""

    def __init__(self, *, mission_id: str, known: Sequence[str], fix: str = "use one of the known ids") -> None:
        names = sorted(set(known))
        listed = ", ".join(names[:LISTED_MISSIONS]) or "none"
        more = f" and {len(names) - LISTED_MISSIONS} more" if len(names) > LISTED_MISSIONS else ""
        super().__init__(f"No mission {mission_id!r} is running or recorded; known: {listed}{more}. Fix: {fix}",
                         mission_id=mission_id, known=names, fix=fix)


LISTED_MISSIONS = 10


class IdentityError(ControlPlaneError):
    """A capability token or API key was missing, forged, expired, or asked beyond its scope."""

    def __init__(self, *, why: str, fix: str) -> None:
        super().__init__(f"Identity refused: {why}. Fix: {fix}", why=why, fix=fix)


class ToolError(ControlPlaneError):
    """A tool call failed at run time: the tool raised, timed out, or returned what the model cannot read."""

    def __init__(self, *, tool: str, why: str, fix: str) -> None:
        super().__init__(f"Tool {tool!r} failed: {why}. Fix: {fix}", tool=tool, why=why, fix=fix)


class AgentStopped(ControlPlaneError):
    """An agent's tool-calling loop hit a bound: max_steps, max_tool_calls, a repeated call, or invalid answers."""

    def __init__(self, *, agent: str, task: str, cause: str, why: str, fix: str) -> None:
        super().__init__(
            f"Agent {agent!r} stopped task {task!r} ({cause}): {why}. Fix: {fix}",
            agent=agent, task=task, cause=cause, why=why, fix=fix,
        )


class DeadlineExceeded(ControlPlaneError):
    """The caller's own deadline passed; the backend is not blamed (no breaker failure). A retry may help."""

    retryable = True

    def __init__(self, *, what: str, timeout_s: float, fix: str = "raise timeout_s, or ask for fewer tokens") -> None:
        super().__init__(f"{what} did not finish within the caller's timeout_s={timeout_s:g}. Fix: {fix}",
                         what=what, timeout_s=timeout_s, fix=fix)


class OutputTruncated(ControlPlaneError):
    """A structured output was cut off by max_tokens into invalid JSON; a retry with more room may succeed."""

    retryable = True
    task: str
    max_tokens: int
    finish_reason: str

    def __init__(self, *, task: str, max_tokens: int, finish_reason: str = "length") -> None:
        super().__init__(
            f"Task {task!r}: the model's JSON answer was cut off at max_tokens={max_tokens} "
            f"(finish_reason={finish_reason!r}). Fix: raise the agent's max_tokens, or bound the schema's arrays "
            "and strings (maxItems, maxLength)",
            task=task, max_tokens=max_tokens, finish_reason=finish_reason)


class ToolCallInDoubt(ControlPlaneError):
    """A side-effecting tool call was in flight at a crash; running it again could repeat its effect."""

    def __init__(self, *, tool: str, call_key: str, args_digest: str) -> None:
        super().__init__(
            f"Tool {tool!r} (call {call_key}, arguments {args_digest}) was running when the mission stopped, so "
            "whether its effect happened is unknown; it has side_effects: true and is not idempotent, so it is not "
            "run again. Fix: check the tool's target for that effect by hand; if repeating it is safe, mark the "
            "tool `idempotent: true` and resume, otherwise finish the task by hand",
            tool=tool, call_key=call_key, args_digest=args_digest)


class MissionLogError(ControlPlaneError):
    """A mission log cannot be read or continued: a corrupt record, or a broken hash chain."""

    seq: int | None
    why: str

    def __init__(self, *, uri: str, seq: int | None, why: str,
                 fix: str = "run `controlplane audit verify` on the run to see the first bad record") -> None:
        where = f"record {seq}" if seq is not None else "the log"
        super().__init__(f"Mission log {uri}: {where} is bad: {why}. Fix: {fix}", uri=uri, seq=seq, why=why, fix=fix)


class RunRecordError(ControlPlaneError):
    """A file the supervisor wrote whole when its mission ended no longer reads as one; the log beside it is
    the hash-chained record."""

    file: str
    why: str

    def __init__(self, *, run: str, file: str, why: str) -> None:
        fix = (f"it was changed after the mission wrote it: restore it, or read the mission's hash-chained log with "
               f"`controlplane audit verify {run}` and `controlplane audit show {run}`")
        super().__init__(f"Run record {str(run).rstrip('/')}/{file} cannot be read: {why}. Fix: {fix}",
                         run=run, file=file, why=why, fix=fix)


class MissionStopped(ControlPlaneError):
    """A mission that has not ended will not end by itself: the cluster it ran on is gone. Its log holds what it
    did, and `controlplane resume` continues it."""

    def __init__(self, *, run: str, why: str) -> None:
        fix = f"continue it with `controlplane resume {run}`"
        super().__init__(f"The mission in {run} stopped before its end: {why}. Fix: {fix}", run=run, why=why, fix=fix)


class MissionIdInUse(ControlPlaneError):
    """A mission id is taken: its mission is running, or its run directory holds a finished mission."""

    retryable = False

    def __init__(self, *, mission_id: str, why: str, fix: str) -> None:
        super().__init__(f"Mission id {mission_id!r} cannot be used: {why}. Fix: {fix}",
                         mission_id=mission_id, why=why, fix=fix)


class ScopeDenied(IdentityError):
    """Valid credentials that ask beyond their scope (another agent or mission, a higher priority, a supervisor's
    action); the HTTP API answers 403 where a missing or bad credential gets 401."""


class ApprovalDenied(ControlPlaneError):
    """A call or a plan that needed a human approval was denied, or waited past its timeout."""

    retryable = False

    def __init__(self, *, subject: str, approval_id: str, decided_by: str, reason: str | None) -> None:
        super().__init__(
            f"{subject} was not approved: approval {approval_id} was denied by {decided_by} "
            f"({reason or 'no reason given'}). Fix: approve it with `controlplane approve RUN {approval_id}` while "
            "it waits, raise policies.approval_timeout_s, or change the mission so it does not need it",
            subject=subject, approval_id=approval_id, decided_by=decided_by, reason=reason)


class PlacementTimeout(ControlPlaneError):
    """A mission's agents could not be reserved together in time; the operator adds resources (or the user asks
    for fewer)."""

    def __init__(self, *, mission_id: str, timeout_s: float, strategy: str, missing: str) -> None:
        super().__init__(
            f"Mission {mission_id!r} could not place its agents ({strategy}) within placement.timeout_s="
            f"{timeout_s:g}: {missing}. Fix: add nodes or raise the autoscaler's max_workers, lower the agents' "
            f"resources, use a looser placement.strategy, or raise placement.timeout_s",
            mission_id=mission_id, timeout_s=timeout_s, strategy=strategy, missing=missing)
