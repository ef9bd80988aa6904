"""Human approvals and the kill switch from a driver (the CLI, a test, a notebook): the Python API behind
`controlplane approvals|approve|deny RUN` and `controlplane stop --all`."""

from __future__ import annotations

import getpass
from typing import Any

import ray
from ray.exceptions import RayTaskError

from actors._launch import find_supervisor, running_missions
from controlplane._ray_errors import cause_of


def approvals(mission_id: str) -> list[dict[str, Any]]:
    """The approvals of a running mission that wait for a decision, oldest first (`Approval` fields)."""
    return _get(find_supervisor(mission_id).approvals_pending.remote())


def approve(mission_id: str, approval_id: str, *, reason: str | None = None, by: str | None = None
            ) -> dict[str, Any]:
    """Approve `approval_id` (`ap-<n>`): the paused call runs (or the plan's tasks start). Returns the decision."""
    return _decide(mission_id, approval_id, approve=True, reason=reason, by=by)


def deny(mission_id: str, approval_id: str, *, reason: str | None = None, by: str | None = None) -> dict[str, Any]:
    """Deny `approval_id`: the model reads a tool error with `reason` (a denied plan fails the mission)."""
    return _decide(mission_id, approval_id, approve=False, reason=reason, by=by)


def stop_all(reason: str = "stopped by `controlplane stop --all`") -> dict[str, str]:
    """Cancel every mission running on this cluster at once; returns each mission's final status."""
    handles = {mission_id: find_supervisor(mission_id) for mission_id in running_missions()}
    refs = {mission_id: handle.cancel.remote(reason) for mission_id, handle in handles.items()}
    return {mission_id: _get(ref) for mission_id, ref in refs.items()}


def _decide(mission_id: str, approval_id: str, *, approve: bool, reason: str | None, by: str | None
            ) -> dict[str, Any]:
    handle = find_supervisor(mission_id)
    return _get(handle.decide_approval.remote(approval_id, approve, by or getpass.getuser(), reason))


def _get(ref: Any) -> Any:
    """The value of `ref`; the supervisor's own error (SpecError for an unknown id, ...) rather than Ray's wrapper."""
    try:
        return ray.get(ref)
    except RayTaskError as exc:
        raise cause_of(exc) from None
