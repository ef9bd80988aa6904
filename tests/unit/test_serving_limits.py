"""Token buckets and admission, with time passed in."""

import pytest

from controlplane import BackpressureError
from serving._limits import Admission, ScopeLimits, TokenBucket


def test_bucket_refills_evenly_over_a_minute():
    bucket = TokenBucket(60, now_s=0.0)
    bucket.take(60, now_s=0.0)
    assert bucket.wait_s(1, now_s=0.0) == pytest.approx(1.0)
    assert bucket.wait_s(1, now_s=1.0) == 0.0
    assert bucket.wait_s(30, now_s=1.0) == pytest.approx(29.0)


def test_unlimited_bucket_never_waits():
    bucket = TokenBucket(None, now_s=0.0)
    bucket.take(10**9, now_s=0.0)
    assert bucket.wait_s(10**9, now_s=0.0) == 0.0


def test_rpm_limit_refuses_with_retry_after_and_recovers():
    admission = Admission({"agent": ScopeLimits(rpm=2)})
    admission.admit(["agent:a"], 10, now_s=0.0)
    admission.admit(["agent:a"], 10, now_s=0.0)
    with pytest.raises(BackpressureError) as info:
        admission.admit(["agent:a"], 10, now_s=0.0)
    assert info.value.retry_after_s == pytest.approx(30.0)
    assert "rpm=2" in str(info.value)
    admission.admit(["agent:b"], 10, now_s=0.0)  # another agent has its own bucket
    admission.admit(["agent:a"], 10, now_s=30.0)


def test_tpm_is_reconciled_with_real_usage():
    admission = Admission({"mission": ScopeLimits(tpm=100)})
    admission.admit(["mission:m"], 90, now_s=0.0)
    admission.release(["mission:m"], 90, used_tokens=10, now_s=0.0)  # 80 estimated tokens come back
    admission.admit(["mission:m"], 90, now_s=0.0)
    admission.release(["mission:m"], 90, used_tokens=90, now_s=0.0)
    with pytest.raises(BackpressureError, match="tpm=100"):
        admission.admit(["mission:m"], 90, now_s=0.0)


def test_in_flight_cap_and_release():
    admission = Admission({"agent": ScopeLimits(max_in_flight=1)})
    admission.admit(["agent:a"], 1, now_s=0.0)
    with pytest.raises(BackpressureError, match="max_in_flight=1"):
        admission.admit(["agent:a"], 1, now_s=0.0)
    admission.release(["agent:a"], 1, used_tokens=1, now_s=0.0)
    admission.admit(["agent:a"], 1, now_s=0.0)


def test_refusal_charges_no_scope():
    admission = Admission({"agent": ScopeLimits(rpm=5), "mission": ScopeLimits(max_in_flight=1)})
    admission.admit(["agent:a", "mission:m"], 1, now_s=0.0)
    with pytest.raises(BackpressureError):
        admission.admit(["agent:b", "mission:m"], 1, now_s=0.0)
    assert admission.in_flight("agent:b") == 0



def test_scopes_of_agents_that_came_and_went_are_forgotten_and_busy_or_spent_ones_kept():
    admission = Admission({"agent": ScopeLimits(rpm=60, tpm=6000)}, forget_every_s=60.0)
    for n in range(100):  # the agents of ended missions, one call each
        admission.admit([f"agent:m{n}/a"], 10, now_s=0.0)
        admission.release([f"agent:m{n}/a"], 10, 10, now_s=0.0)
    admission.admit(["agent:live/running"], 10, now_s=1.0)  # still running at the next sweep
    for _ in range(60):
        admission.admit(["agent:live/spent"], 10, now_s=60.5)
        admission.release(["agent:live/spent"], 10, 10, now_s=60.5)
    admission.admit(["agent:live/new"], 10, now_s=61.0)
    assert sorted(admission.scopes()) == ["agent:live/new", "agent:live/running", "agent:live/spent"]
    with pytest.raises(BackpressureError):  # the spent agent's bucket was kept, not forgotten and refilled
        admission.admit(["agent:live/spent"], 10, now_s=61.0)
