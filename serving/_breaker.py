"""A circuit breaker per backend. Pure logic, time passed in.

closed --(failure_threshold consecutive failures)--> open --(open_s elapsed)--> half_open
half_open --(probe succeeds)--> closed;  half_open --(probe fails)--> open again
While half-open, at most `half_open_probes` calls are let through at once.
"""

from __future__ import annotations

from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, *, failure_threshold: int, open_s: float, half_open_probes: int = 1) -> None:
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.half_open_probes = half_open_probes
        self._state: State = "closed"
        self._failures = 0
        self._opened_at_s = 0.0
        self._probes_in_flight = 0

    def state(self, now_s: float) -> State:
        if self._state == "open" and now_s - self._opened_at_s >= self.open_s:
            self._state = "half_open"
            self._probes_in_flight = 0
        return self._state

    def allow(self, now_s: float) -> bool:
        """May a call go to this backend now? A half-open `True` is a probe: report its outcome."""
        state = self.state(now_s)
        if state == "closed":
            return True
        if state == "half_open" and self._probes_in_flight < self.half_open_probes:
            self._probes_in_flight += 1
            return True
        return False

    def abandon(self, now_s: float) -> None:
        """A call that `allow` let through ended with no verdict on the backend: refused before it reached
        it, cancelled, its caller gone, or past the caller's own deadline. A half-open probe frees its slot."""
        self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def retry_after_s(self, now_s: float) -> float:
        return max(0.0, self._opened_at_s + self.open_s - now_s)

    def record_success(self, now_s: float) -> None:
        self._state = "closed"
        self._failures = 0
        self._probes_in_flight = 0

    def record_failure(self, now_s: float) -> None:
        """A backend failure (5xx, broken stream) or the router's own timeout; never a caller's deadline."""
        if self.state(now_s) == "half_open":
            self._open(now_s)
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open(now_s)

    def _open(self, now_s: float) -> None:
        self._state = "open"
        self._opened_at_s = now_s
        self._failures = 0
        self._probes_in_flight = 0
