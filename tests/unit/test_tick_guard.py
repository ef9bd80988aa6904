"""The supervisor loop's verdict on each tick: failures pause and go on until too many in a row; slow ticks."""

import pytest

from controlplane._core.tick_guard import FAILED_TICK_PAUSE_S, MAX_FAILED_TICKS, SLOW_TICK_S, TickGuard


def test_a_failing_tick_pauses_the_loop_which_goes_on_until_too_many_fail_in_a_row():
    guard, bug = TickGuard(), RuntimeError("a bug in a tick")
    for _ in range(MAX_FAILED_TICKS - 1):
        assert guard.judge(0.001, bug).pause_s == FAILED_TICK_PAUSE_S
    with pytest.raises(RuntimeError, match="a bug in a tick"):  # the mission fails with it rather than spin
        guard.judge(0.001, bug)


def test_a_good_tick_resets_the_count_of_failures():
    guard, bug = TickGuard(max_failed=3), ValueError("flaky")
    for _ in range(5):
        guard.judge(0.001, bug)
        guard.judge(0.001, bug)
        assert guard.judge(0.001).pause_s == 0 and guard.failed_in_a_row == 0


def test_a_tick_slower_than_the_threshold_is_reported():
    guard = TickGuard()
    assert not guard.judge(SLOW_TICK_S).slow and guard.judge(SLOW_TICK_S + 0.001).slow
    assert guard.judge(1.0, KeyError("x")).slow  # a failing tick may be slow too
