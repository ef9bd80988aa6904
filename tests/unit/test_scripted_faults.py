"""The scripted engine's injected faults: a seeded share of random failures and one outage window, recorded so a
chaos test can tell how many calls the router sent to a dead backend and when it came back."""

import pytest

from controlplane.config.serving import ScriptedFaultSpec, parse_serving_config
from controlplane.errors import SpecError
from serving._backends.scripted import FaultInjector


def failures(injector, times):
    return [injector.failure(t) is not None for t in times]


def test_the_failure_rate_is_a_seeded_share_of_calls():
    draws = failures(FaultInjector(ScriptedFaultSpec(failure_rate=0.3, seed=7)), range(2000))
    assert 0.25 < sum(draws) / len(draws) < 0.35
    assert draws == failures(FaultInjector(ScriptedFaultSpec(failure_rate=0.3, seed=7)), range(2000))
    assert not any(failures(FaultInjector(ScriptedFaultSpec()), range(100)))


def test_the_outage_fails_every_call_in_its_window_then_the_first_success_is_recorded():
    injector = FaultInjector(ScriptedFaultSpec(outage_after_calls=3, outage_s=10.0))
    assert failures(injector, [0.0, 1.0, 2.0]) == [False, False, False]
    for t in (0.0, 1.0, 2.0):
        injector.succeeded(t)
    assert injector.failure(5.0) == "injected outage of 10 s"  # the 4th call starts it
    assert failures(injector, [6.0, 14.9]) == [True, True]
    injector.succeeded(14.95)  # a call that started before the end does not count as the recovery
    assert failures(injector, [15.0, 16.0]) == [False, False]
    injector.succeeded(15.2)
    injector.succeeded(16.2)
    record = injector.record()
    assert record["outage_started_at_s"] == 5.0 and record["outage_ended_at_s"] == 15.0
    assert record["outage_failures_at_s"] == [5.0, 6.0, 14.9]
    assert record["first_success_after_outage_at_s"] == 15.2
    assert record["calls"] == 8 and record["random_failures"] == 0


def test_the_serving_config_checks_the_fault_fields():
    config = {"models": {"m": {"kind": "scripted", "faults": {"failure_rate": 0.3, "outage_after_calls": 20}}}}
    assert parse_serving_config(config).models["m"].faults.outage_s == 10.0
    with pytest.raises(SpecError, match="failure_rate"):
        parse_serving_config({"models": {"m": {"kind": "scripted", "faults": {"failure_rate": 1.5}}}})
