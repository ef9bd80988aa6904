"""Human approvals: a tool call (or a plan) that waits for a person's yes or no. Pure logic, time passed in.

A request waits until someone approves or denies it, or until its deadline, when `expire` turns it into a
denial. Ids are assigned in request order (`ap-1`, `ap-2`, ...). A desk rebuilt from the mission log's records
(after a restart) goes on from them: its ids continue, a decision stands, and a request waits to its first
deadline. Deciding twice the same way is a no-op; changing a decision is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controlplane.errors import SpecError

Status = Literal["pending", "approved", "denied"]
TIMEOUT_DECIDER = "timeout"


@dataclass(frozen=True, kw_only=True)
class Approval:
    """One request and, once made, its decision."""

    id: str
    """`ap-<n>`; what `controlplane approve RUN ID` names."""
    call_id: str
    """The paused tool call (or `plan`), unique per mission."""
    agent: str
    tool: str
    arg_digest: str
    """A digest of the call's arguments: names what is approved in the log, without its content."""
    requested_at_s: float
    deadline_s: float
    status: Status = "pending"
    decided_by: str | None = None
    """Who decided: a person's name, or `timeout`."""
    decided_at_s: float | None = None
    reason: str | None = None


class ApprovalDesk:
    """The approvals of one mission."""

    def __init__(self, recorded: Iterable[Mapping[str, Any]] = ()) -> None:
        """`recorded`: the approvals of the mission log, in request order (`RecoveredState.approvals`)."""
        fields = {f.name for f in dataclasses.fields(Approval)}
        self._by_id: dict[str, Approval] = {}
        self._by_call: dict[str, str] = {}
        for record in recorded:
            approval = Approval(**{key: value for key, value in record.items() if key in fields})
            self._by_id[approval.id] = approval
            self._by_call[approval.call_id] = approval.id

    def for_call(self, call_id: str) -> Approval | None:
        """The call's approval, if it has asked."""
        approval_id = self._by_call.get(call_id)
        return None if approval_id is None else self._by_id[approval_id]

    def request(self, call_id: str, *, agent: str, tool: str, arg_digest: str, now_s: float,
                timeout_s: float) -> Approval:
        """A pending approval for the call; the existing one when the call already asked (a retried request)."""
        if call_id in self._by_call:
            return self._by_id[self._by_call[call_id]]
        if timeout_s <= 0:
            raise SpecError(where="approval timeout_s", value=timeout_s, why="it must be positive",
                            fix="set a timeout of at least a few seconds")
        approval = Approval(id=f"ap-{len(self._by_id) + 1}", call_id=call_id, agent=agent, tool=tool,
                            arg_digest=arg_digest, requested_at_s=now_s, deadline_s=now_s + timeout_s)
        self._by_id[approval.id] = approval
        self._by_call[call_id] = approval.id
        return approval

    def approve(self, approval_id: str, *, by: str, now_s: float, reason: str | None = None) -> Approval:
        return self._decide(approval_id, "approved", by=by, now_s=now_s, reason=reason)

    def deny(self, approval_id: str, *, by: str, now_s: float, reason: str | None = None) -> Approval:
        return self._decide(approval_id, "denied", by=by, now_s=now_s, reason=reason)

    def expire(self, now_s: float) -> list[Approval]:
        """Deny every pending approval whose deadline has passed; returns them."""
        expired = []
        for approval in self.pending():
            if now_s >= approval.deadline_s:
                waited_s = approval.deadline_s - approval.requested_at_s
                expired.append(self._record(approval, "denied", by=TIMEOUT_DECIDER, now_s=now_s,
                                            reason=f"no decision within {waited_s:g} s"))
        return expired

    def pending(self) -> list[Approval]:
        """What waits, oldest first."""
        return [a for a in self._by_id.values() if a.status == "pending"]

    def get(self, approval_id: str) -> Approval:
        if approval_id not in self._by_id:
            raise SpecError(where="approval id", value=approval_id, why="no approval of this mission has this id",
                            fix="see the ids with `controlplane approvals RUN`")
        return self._by_id[approval_id]

    def _decide(self, approval_id: str, status: Status, *, by: str, now_s: float, reason: str | None) -> Approval:
        self.expire(now_s)
        approval = self.get(approval_id)
        if approval.status == status:
            return approval
        if approval.status != "pending":
            raise SpecError(where="approval", value=approval_id,
                            why=f"it was already {approval.status} by {approval.decided_by} "
                                f"({approval.reason or 'no reason given'})",
                            fix="request the call again if it should run")
        return self._record(approval, status, by=by, now_s=now_s, reason=reason)

    def _record(self, approval: Approval, status: Status, *, by: str, now_s: float, reason: str | None) -> Approval:
        decided = dataclasses.replace(approval, status=status, decided_by=by, decided_at_s=now_s, reason=reason)
        self._by_id[approval.id] = decided
        return decided
