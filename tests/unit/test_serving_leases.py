"""Shared limits by leases: N replicas never admit more than one exact limiter, and fall short of it by at most
N x max_lease units; unused units go back; a call larger than a lease, or than the bucket, is served as one
replica's own bucket would."""

import math

import pytest

from serving._leases import Lease, LeaseBook, LeaseHolder, Quota

RPM = 600.0  # 10 per second


def _replicas_run(n_replicas: int, seconds: float, step_s: float = 0.01, ttl_s: float = 1.0) -> tuple[int, LeaseBook]:
    """Each replica wants a call every step; returns calls admitted over `seconds` (after a drained start)."""
    book = LeaseBook(max_lease_fraction=0.01)
    book.set_quota("model:m", Quota.per_minute(RPM), 0.0)
    book.charge("model:m", RPM, 0.0)  # drain the initial burst so the rate is what is measured
    holders = [LeaseHolder(ttl_s=ttl_s) for _ in range(n_replicas)]
    admitted, now = 0, 0.0
    while now < seconds:
        for holder in holders:
            for scope, units in holder.expired(now).items():
                book.give_back(scope, units, now)
            if not holder.take("model:m", 1, now):
                lease = book.grant("model:m", math.inf, now, at_least=1)
                if lease.units:
                    holder.add(lease, now)
                    holder.take("model:m", 1, now)
                else:
                    continue
            admitted += 1
        now += step_s
    return admitted, book


@pytest.mark.parametrize("replicas", [1, 3, 8])
def test_n_replicas_stay_within_epsilon_below_the_exact_limit(replicas):
    seconds = 60.0
    admitted, book = _replicas_run(replicas, seconds)
    exact = RPM / 60.0 * seconds
    epsilon = replicas * book.max_lease("model:m")
    assert exact - epsilon <= admitted <= exact + 1


def test_a_lease_is_capped_and_refused_when_the_bucket_is_short():
    book = LeaseBook(max_lease_fraction=0.01)
    book.set_quota("model:m", Quota.per_minute(6000), 0.0)
    assert book.grant("model:m", 10_000, 0.0).units == 60  # 1% of the capacity
    book.grant("model:m", 10_000, 0.0)
    book.set_quota("mission:x", Quota.per_minute(100), 0.0)
    assert book.grant("mission:x", 80, 0.0).units == 1  # 1% of 100, and at least one unit
    refused = book.grant("mission:x", 500, 0.0, at_least=500)
    assert refused.units == 0 and refused.retry_after_s == pytest.approx(0.6)  # until the bucket is full


def test_retry_after_says_when_the_bucket_will_hold_the_amount():
    book = LeaseBook()
    book.set_quota("s", Quota(capacity=10, refill_per_s=2), 0.0)
    assert book.grant("s", 10, 0.0, at_least=0).units == 1  # capped at max(1, 1% of 10)
    for _ in range(9):
        book.grant("s", 10, 0.0)
    lease = book.grant("s", 4, 0.0, at_least=4)
    assert lease == Lease(scope="s", units=0.0, retry_after_s=2.0)


def test_unlimited_scopes_grant_what_is_asked():
    assert LeaseBook().grant("agent:a", 7, 0.0).units == 7


def test_unused_units_expire_and_go_back():
    book = LeaseBook(max_lease_fraction=0.5)
    book.set_quota("s", Quota(capacity=10, refill_per_s=0.0), 0.0)
    holder = LeaseHolder(ttl_s=1.0)
    holder.add(book.grant("s", 5, 0.0), 0.0)
    assert holder.take("s", 2, 0.5) and book.level("s", 0.5) == 5
    assert not holder.take("s", 1, 1.0)  # expired
    returned = holder.expired(1.0)
    assert returned == {"s": 3}
    for scope, units in returned.items():
        book.give_back(scope, units, 1.0)
    assert book.level("s", 1.0) == 8  # 10 - the 2 used


def test_an_overrun_is_charged_and_delays_the_next_grant():
    book = LeaseBook()
    book.set_quota("tokens", Quota(capacity=100, refill_per_s=10), 0.0)
    book.grant("tokens", 100, 0.0)  # 1 unit (1%)
    book.charge("tokens", 120, 0.0)
    assert book.level("tokens", 0.0) == pytest.approx(-21)
    assert book.grant("tokens", 5, 1.0, at_least=5).units == 0


def test_release_all_and_put_back():
    holder = LeaseHolder(ttl_s=10.0)
    holder.add(Lease(scope="s", units=4), 0.0)
    holder.take("s", 3, 0.0)
    holder.put_back("s", 2, 0.0)  # estimate above the real usage
    assert holder.held("s", 0.0) == 3
    assert holder.release_all() == {"s": 3} and holder.held("s", 0.0) == 0


def test_a_call_larger_than_the_lease_cap_gets_its_whole_amount_while_the_bucket_holds_it():
    book = LeaseBook(max_lease_fraction=0.01)
    book.set_quota("model:m:tpm", Quota.per_minute(10_000), 0.0)  # leases of 100 tokens; the call needs 600
    assert book.grant("model:m:tpm", math.inf, 0.0, at_least=600).units == 600
    book.charge("model:m:tpm", 9_000, 0.0)
    refused = book.grant("model:m:tpm", math.inf, 0.0, at_least=600)
    assert refused.units == 0 and refused.retry_after_s == pytest.approx(1.2)  # 200 tokens short, 166.7 a second


def test_a_call_larger_than_the_bucket_takes_it_full_as_one_replicas_own_bucket_does():
    book = LeaseBook()
    book.set_quota("agent:a:tpm", Quota.per_minute(600), 0.0)
    assert book.grant("agent:a:tpm", math.inf, 0.0, at_least=700).units == 700
    assert book.level("agent:a:tpm", 0.0) == -100
    refused = book.grant("agent:a:tpm", math.inf, 0.0, at_least=700)
    assert refused.units == 0 and refused.retry_after_s == pytest.approx(70.0)  # back to full: 700 tokens at 10/s
