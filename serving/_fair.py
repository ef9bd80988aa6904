"""Weighted fair queueing of waiting calls between missions (flows). Pure logic.

Priorities first, as before: `control` before `normal` before `bulk`. Within a priority, each flow (a
mission) gets a share of the service that follows its weight: a call is tagged with a virtual finish time,
`max(virtual clock, the flow's last finish) + cost / weight`, and the smallest tag goes first (WFQ with the
virtual clock at the start tag of the call last served, as in start-time fair queueing). A flow that sent
nothing for a while starts at the virtual clock, so it neither banks credit nor waits behind a noisy flow's
backlog: a noisy mission cannot starve a quiet one.

Within a flow, the call with the least slack goes first (a call's slack: how long its task may wait without
delaying its mission; the supervisor sets it from the DAG), then first in, first out; calls without slack
come after those with. The flow's tags stay as they were assigned, so its share does not change: when a
flow's turn comes, its most urgent waiting call takes the turn.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from controlplane.errors import BackpressureError, SpecError

T = TypeVar("T")
PRIORITY_RANK = {"control": 0, "normal": 1, "bulk": 2}
"""`control` (supervisor, planner, judge) before `normal` before `bulk`."""
DEFAULT_WEIGHT = 1.0
PRUNE_ABOVE = 1024
"""Flows remembered beyond those with calls waiting before idle ones are forgotten."""


@dataclass(order=True)
class _Waiting(Generic[T]):
    rank: int
    finish: float
    seq: int
    start: float = field(compare=False)
    flow: str = field(compare=False)
    item: T = field(compare=False)
    urgency: tuple[float, int] = field(compare=False)
    """(slack, arrival); the smallest of a flow's waiting calls takes the flow's next turn."""


class FairQueue(Generic[T]):
    """A bounded queue: priority classes, weighted fair between flows inside each class."""

    def __init__(self, *, capacity: int, scope: str) -> None:
        self.capacity = capacity
        self.scope = scope
        self._heap: list[_Waiting[T]] = []
        self._seq = itertools.count()
        self._weights: dict[str, float] = {}
        self._clock = {rank: 0.0 for rank in PRIORITY_RANK.values()}
        self._last_finish: dict[tuple[int, str], float] = {}
        self._with_slack: Counter[tuple[int, str]] = Counter()

    def __len__(self) -> int:
        return len(self._heap)

    def set_weight(self, flow: str, weight: float) -> None:
        """A flow's share relative to the others (default 1); takes effect for calls queued from now on."""
        if not weight > 0:
            raise SpecError(where=f"weight of {flow!r}", value=weight, why="a share must be positive",
                            fix="give a weight above 0, e.g. 1 for normal and 4 for a mission that should get 4x")
        self._weights[flow] = weight

    def weight(self, flow: str) -> float:
        return self._weights.get(flow, DEFAULT_WEIGHT)

    def push(self, item: T, priority: str, *, flow: str = "", cost: float = 1.0, slack_s: float | None = None,
             retry_after_s: float = 1.0) -> None:
        """Queue `item` for `flow`, costing `cost` of service (e.g. its tokens), with its task's `slack_s`
        (None: after the flow's calls with slack); a full queue raises BackpressureError."""
        if len(self._heap) >= self.capacity:
            raise BackpressureError(scope=self.scope, limit=f"max_queue={self.capacity}",
                                    retry_after_s=retry_after_s)
        rank = PRIORITY_RANK[priority]
        start = max(self._clock[rank], self._last_finish.get((rank, flow), 0.0))
        finish = start + max(cost, 1e-9) / self.weight(flow)
        self._last_finish[(rank, flow)] = finish
        seq = next(self._seq)
        urgency = (float("inf") if slack_s is None else slack_s, seq)
        if slack_s is not None:
            self._with_slack[(rank, flow)] += 1
        heapq.heappush(self._heap, _Waiting(rank, finish, seq, start, flow, item, urgency))

    def pop(self) -> T:
        """The next item: highest priority, then smallest virtual finish time."""
        waiting = heapq.heappop(self._heap)
        self._clock[waiting.rank] = max(self._clock[waiting.rank], waiting.start)
        if self._with_slack[(waiting.rank, waiting.flow)]:
            urgent = min((w for w in self._heap if w.rank == waiting.rank and w.flow == waiting.flow),
                         key=lambda w: w.urgency, default=None)
            if urgent is not None and urgent.urgency < waiting.urgency:  # the flow's turn goes to its most urgent
                urgent.item, waiting.item = waiting.item, urgent.item
                urgent.urgency, waiting.urgency = waiting.urgency, urgent.urgency
        self._forget_slack(waiting)
        if len(self._last_finish) > PRUNE_ABOVE + 2 * len(self._heap):
            self._last_finish = {key: finish for key, finish in self._last_finish.items()
                                 if finish > self._clock[key[0]]}  # the others would start at the clock anyway
        return waiting.item

    def remove(self, item: T) -> bool:
        """Drop a waiting item (its caller gave up); False if it was not queued."""
        for index, waiting in enumerate(self._heap):
            if waiting.item is item:
                self._heap.pop(index)
                heapq.heapify(self._heap)
                self._forget_slack(waiting)
                return True
        return False

    def _forget_slack(self, waiting: _Waiting[T]) -> None:
        if waiting.urgency[0] != float("inf"):
            self._with_slack[(waiting.rank, waiting.flow)] -= 1
