"""A bounded priority queue of waiting calls. Pure logic.

Priorities: `control` (supervisor, planner, judge) before `normal` before `bulk`; first in,
first out within a priority. A full queue refuses new items instead of growing.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

from controlplane.errors import BackpressureError

T = TypeVar("T")

PRIORITY_RANK = {"control": 0, "normal": 1, "bulk": 2}


class BoundedPriorityQueue(Generic[T]):
    def __init__(self, *, capacity: int, scope: str) -> None:
        self.capacity = capacity
        self.scope = scope
        self._heap: list[tuple[int, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: T, priority: str, *, retry_after_s: float = 1.0) -> None:
        """Queue `item`; a full queue raises BackpressureError."""
        if len(self._heap) >= self.capacity:
            raise BackpressureError(scope=self.scope, limit=f"max_queue={self.capacity}",
                                    retry_after_s=retry_after_s)
        heapq.heappush(self._heap, (PRIORITY_RANK[priority], next(self._seq), item))

    def pop(self) -> T:
        """The first item of the highest priority."""
        return heapq.heappop(self._heap)[2]

    def remove(self, item: T) -> bool:
        """Drop a waiting item (its caller gave up); False if it was not queued."""
        for index, entry in enumerate(self._heap):
            if entry[2] is item:
                self._heap.pop(index)
                heapq.heapify(self._heap)
                return True
        return False
