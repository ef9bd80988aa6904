"""Human approvals: approved calls run, denied ones do not, and silence becomes a denial at the deadline."""

import pytest

from controlplane._core.approvals import ApprovalDesk
from controlplane.errors import SpecError


def ask(desk, call_id="c1", *, now_s=0.0, timeout_s=60.0, tool="shell"):
    return desk.request(call_id, agent="writer", tool=tool, arg_digest="sha256:ab12", now_s=now_s,
                        timeout_s=timeout_s)


def test_a_request_waits_until_approved():
    desk = ApprovalDesk()
    approval = ask(desk)
    assert (approval.id, approval.status, approval.deadline_s) == ("ap-1", "pending", 60.0)
    assert desk.pending() == [approval]
    approved = desk.approve("ap-1", by="alice", now_s=5.0, reason="looks safe")
    assert (approved.status, approved.decided_by, approved.decided_at_s, approved.reason) == (
        "approved", "alice", 5.0, "looks safe")
    assert desk.pending() == [] and ask(desk, "c1", now_s=6.0) == approved
    assert desk.expire(now_s=1000.0) == []  # a decided approval never times out


def test_a_denied_request_stays_denied():
    desk = ApprovalDesk()
    ask(desk)
    denied = desk.deny("ap-1", by="bob", now_s=1.0, reason="touches prod")
    assert (denied.status, denied.reason) == ("denied", "touches prod")
    assert desk.deny("ap-1", by="bob", now_s=2.0) == denied  # the same decision again: no change
    with pytest.raises(SpecError, match="already denied by bob \\(touches prod\\)"):
        desk.approve("ap-1", by="alice", now_s=3.0)


def test_silence_becomes_a_denial_at_the_deadline():
    desk = ApprovalDesk()
    ask(desk, "c1", now_s=0.0, timeout_s=10.0)
    ask(desk, "c2", now_s=5.0, timeout_s=10.0)
    assert desk.expire(now_s=9.9) == []
    [expired] = desk.expire(now_s=10.0)
    assert (expired.id, expired.status, expired.decided_by, expired.reason) == (
        "ap-1", "denied", "timeout", "no decision within 10 s")
    assert [a.id for a in desk.pending()] == ["ap-2"]


def test_an_approval_after_the_deadline_is_refused():
    desk = ApprovalDesk()
    ask(desk, timeout_s=10.0)
    with pytest.raises(SpecError, match="already denied by timeout"):
        desk.approve("ap-1", by="alice", now_s=11.0)


def test_a_retried_request_is_the_same_approval_and_ids_follow_request_order():
    desk = ApprovalDesk()
    first = ask(desk, "c1")
    assert ask(desk, "c1", now_s=30.0) == first
    assert ask(desk, "plan", tool="plan").id == "ap-2"


def test_unknown_ids_and_bad_timeouts_are_spec_errors():
    desk = ApprovalDesk()
    with pytest.raises(SpecError, match="controlplane approvals RUN"):
        desk.approve("ap-9", by="alice", now_s=0.0)
    with pytest.raises(SpecError, match="positive"):
        ask(desk, timeout_s=0)
