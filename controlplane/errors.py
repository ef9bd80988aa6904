"""Every error controlplane raises on purpose derives from one base, split by who must act.

    ControlPlaneError
    ├── SpecError              the user fixes a mission spec or a config file
    ├── SetupError             the user fixes the environment (missing model, missing extra)
    ├── ReplicaUnavailable     the operator fixes the cluster (no replica, backend down, breaker open); retryable
    ├── BackpressureError      a retry later may help (rate limit, full queue); carries retry_after_s
    ├── BudgetExceeded         a hard cap was reached (mission tokens, calls, wall time)
    ├── AccessDenied           an agent touched what its spec does not grant
    └── MissionNotFound        no mission of that id is running or recorded

Errors take keyword fields and build their own message, so the message always names the
value, why it is wrong and the fix. `retryable` on the class is the only switch that decides a retry
(`is_retryable`). Ray pickles exceptions between processes; `__reduce__`
rebuilds them from their fields.
"""

from __future__ import annotations

from typing import Any


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


class SpecError(ControlPlaneError):
    """A mission spec or config is invalid. `where` is the file and YAML path."""

    def __init__(self, *, where: str, value: Any, why: str, fix: str) -> None:
        super().__init__(
            f"{where}: {value!r} is invalid: {why}. Fix: {fix}",
            where=where, value=value, why=why, fix=fix,
        )

    @classmethod
    def from_validation(cls, exc: Any, *, where: str, fix: str) -> SpecError:
        """The first error of a pydantic ValidationError; `where` is prefixed to its field path."""
        first = exc.errors(include_url=False)[0]
        return cls(where=f"{where}{'.'.join(map(str, first['loc']))}", value=first.get("input"),
                   why=first["msg"], fix=fix)


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

    retryable = True

    def __init__(self, *, scope: str, limit: str, retry_after_s: float) -> None:
        super().__init__(
            f"{scope} is over its {limit} limit; retry after {retry_after_s:.2f} s",
            scope=scope, limit=limit, retry_after_s=retry_after_s,
        )


class BudgetExceeded(ControlPlaneError):
    """A hard budget was reached; retrying does not help."""

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
    """No running or recorded mission has this id."""

    def __init__(self, *, mission_id: str, known: list[str]) -> None:
        super().__init__(
            f"No mission {mission_id!r} is running or recorded; known: {sorted(known) or 'none'}",
            mission_id=mission_id, known=list(known),
        )


class PlacementTimeout(ControlPlaneError):
    """A mission's agents could not be reserved together in time; the operator adds resources (or the user asks
    for fewer)."""

    def __init__(self, *, mission_id: str, timeout_s: float, strategy: str, missing: str) -> None:
        super().__init__(
            f"Mission {mission_id!r} could not place its agents ({strategy}) within placement.timeout_s="
            f"{timeout_s:g}: {missing}. Fix: add nodes or raise the autoscaler's max_workers, lower the agents' "
            f"resources, use a looser placement.strategy, or raise placement.timeout_s",
            mission_id=mission_id, timeout_s=timeout_s, strategy=strategy, missing=missing)
