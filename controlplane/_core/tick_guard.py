"""How the supervisor's loop treats each tick: a tick that raises is logged and the loop goes on after a short
pause, until MAX_FAILED_TICKS fail in a row (then the mission fails with that error rather than spin); a tick
slower than SLOW_TICK_S is reported. Pure logic, no Ray: the caller measures the tick and passes what it saw."""

from __future__ import annotations

from dataclasses import dataclass

SLOW_TICK_S = 0.05
MAX_FAILED_TICKS = 20
FAILED_TICK_PAUSE_S = 0.1


@dataclass(frozen=True)
class TickVerdict:
    pause_s: float
    """Least time before the next tick (0: as soon as there is work)."""
    slow: bool
    """The tick took longer than SLOW_TICK_S."""


class TickGuard:
    def __init__(self, *, max_failed: int = MAX_FAILED_TICKS, slow_s: float = SLOW_TICK_S,
                 failed_pause_s: float = FAILED_TICK_PAUSE_S) -> None:
        self.max_failed, self.slow_s, self.failed_pause_s = max_failed, slow_s, failed_pause_s
        self.failed_in_a_row = 0

    def judge(self, took_s: float, error: Exception | None = None) -> TickVerdict:
        """The verdict on a tick that took `took_s` and raised `error` (None: it did not); raises `error` when it
        is the max_failed-th failing tick in a row."""
        self.failed_in_a_row = self.failed_in_a_row + 1 if error is not None else 0
        if error is not None and self.failed_in_a_row >= self.max_failed:
            raise error
        return TickVerdict(pause_s=self.failed_pause_s if error is not None else 0.0, slow=took_s > self.slow_s)
