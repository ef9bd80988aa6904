"""The circuit breaker's state machine, with time passed in."""

from serving._breaker import CircuitBreaker


def make() -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, open_s=10.0, half_open_probes=1)


def test_opens_after_consecutive_failures_only():
    breaker = make()
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    breaker.record_success(0.0)  # the run of failures is broken
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    assert breaker.state(0.0) == "closed"
    breaker.record_failure(1.0)
    assert breaker.state(1.0) == "open"
    assert not breaker.allow(5.0)
    assert breaker.retry_after_s(5.0) == 6.0


def test_half_open_lets_one_probe_through_and_closes_on_success():
    breaker = make()
    for _ in range(3):
        breaker.record_failure(0.0)
    assert breaker.state(10.0) == "half_open"
    assert breaker.allow(10.0)
    assert not breaker.allow(10.0)  # a second caller while the probe runs
    breaker.record_success(10.5)
    assert breaker.state(10.5) == "closed"
    assert breaker.allow(10.5) and breaker.allow(10.5)


def test_failed_probe_reopens_for_a_full_period():
    breaker = make()
    for _ in range(3):
        breaker.record_failure(0.0)
    assert breaker.allow(10.0)
    breaker.record_failure(11.0)
    assert breaker.state(11.0) == "open"
    assert not breaker.allow(20.0)
    assert breaker.allow(21.0)


def test_abandoned_probe_frees_the_probe_slot():
    breaker = make()
    for _ in range(3):
        breaker.record_failure(0.0)
    assert breaker.allow(10.0)
    breaker.abandon(10.0)
    assert breaker.allow(10.0)
