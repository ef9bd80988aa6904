"""The supervisor's approval gate: pending approvals wait here for a person's decision, or their timeout.

The decisions live in the pure `ApprovalDesk`; this shell parks each waiting caller on a future, wakes it when
someone decides (or when the deadline passes), and emits every request and decision as a mission event. The
call's arguments, which the person reads to decide, are held here while it waits and are in no event; after a
restart, a call that waited shows them again once its request, which Ray retries, reaches the new supervisor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

from controlplane._core.approvals import Approval, ApprovalDesk

Emit = Callable[..., Any]


class ApprovalGate:
    """One mission's approvals: `wait` blocks a caller until approved, denied or timed out."""

    def __init__(self, *, emit: Emit, timeout_s: float, recorded: Iterable[Mapping[str, Any]] = ()) -> None:
        """`recorded`: the approvals of the mission log, for a supervisor that continues a mission."""
        self.desk = ApprovalDesk(recorded)
        self._emit, self._timeout_s = emit, timeout_s
        self._waiters: dict[str, asyncio.Future] = {}
        self._arguments: dict[str, Any] = {}

    async def wait(self, call_id: str, *, agent: str, tool: str, arg_digest: str, arguments: Any = None,
                   task: str | None = None) -> Approval:
        """Request an approval and wait for its decision; a timeout comes back as a denial by `timeout`."""
        asked_before = self.desk.for_call(call_id) is not None
        approval = self.desk.request(call_id, agent=agent, tool=tool, arg_digest=arg_digest, now_s=time.time(),
                                     timeout_s=self._timeout_s)
        if approval.status != "pending":
            return approval
        self._arguments[approval.id] = arguments
        waiter = self._waiters.get(approval.id)
        if waiter is None:
            waiter = self._waiters[approval.id] = asyncio.get_running_loop().create_future()
        if not asked_before:
            self._emit(approval.requested_at_s, "approval", "requested", agent=agent, task=task,
                       message=f"{tool} waits for approval {approval.id} "
                               f"(`controlplane approve RUN {approval.id}`)", data=_data(approval))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), max(0.0, approval.deadline_s - time.time()))
        except TimeoutError:
            for expired in self.desk.expire(max(time.time(), approval.deadline_s)):
                self._settled(expired)
            return self.desk.get(approval.id)

    def decide(self, approval_id: str, *, approve: bool, by: str, reason: str | None = None) -> Approval:
        """Approve or deny a pending approval (SpecError for an unknown id or a changed decision)."""
        self._expire()
        decide = self.desk.approve if approve else self.desk.deny
        before = self.desk.get(approval_id).status
        approval = decide(approval_id, by=by, now_s=time.time(), reason=reason)
        if before == "pending":
            self._settled(approval)
        return approval

    def pending(self) -> list[dict[str, Any]]:
        """What waits, oldest first: `Approval` fields and the call's `arguments`."""
        self._expire()
        return [{**asdict(a), "arguments": self._arguments.get(a.id)} for a in self.desk.pending()]

    def waiting(self) -> int:
        """How many calls wait for a decision."""
        self._expire()
        return len(self.desk.pending())

    def deny_all(self, reason: str) -> None:
        """The mission stops: every waiting call is denied, so nothing waits on a mission that is gone."""
        for approval in self.desk.pending():
            self.decide(approval.id, approve=False, by="control-plane", reason=reason)

    def _expire(self) -> None:
        for expired in self.desk.expire(time.time()):
            self._settled(expired)

    def _settled(self, approval: Approval) -> None:
        self._emit(approval.decided_at_s or time.time(), "approval", approval.status, agent=approval.agent,
                   message=f"{approval.tool} {approval.id} {approval.status} by {approval.decided_by}"
                           + (f": {approval.reason}" if approval.reason else ""), data=_data(approval))
        self._arguments.pop(approval.id, None)
        waiter = self._waiters.pop(approval.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(approval)


def _data(approval: Approval) -> dict[str, Any]:
    """What an event holds: ids, tool, digest and decision; never the call's arguments."""
    return {key: value for key, value in asdict(approval).items() if value is not None}
