"""The task DAG: dependency checks, cycle finding (printed as the cycle), order and critical path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controlplane.config._graph import find_cycle


class Dag:
    """Tasks and their dependencies, in declaration order. Pure data: no Ray, no clock."""

    def __init__(self, deps: Mapping[str, Sequence[str]]) -> None:
        self.deps: dict[str, tuple[str, ...]] = {t: tuple(d) for t, d in deps.items()}
        self.dependents: dict[str, list[str]] = {t: [] for t in self.deps}
        for task, needs in self.deps.items():
            for need in needs:
                if need in self.dependents:
                    self.dependents[need].append(task)

    def find_cycle(self) -> list[str] | None:
        """A cycle as a closed path, e.g. ['a', 'b', 'a'], or None when the graph is acyclic."""
        return find_cycle(self.deps)

    def topological_order(self) -> list[str]:
        """Tasks with every dependency first; ties keep declaration order. Assumes no cycle."""
        left = {t: len(d) for t, d in self.deps.items()}
        order, ready = [], [t for t, n in left.items() if n == 0]
        while ready:
            task = ready.pop(0)
            order.append(task)
            for child in self.dependents[task]:
                left[child] -= 1
                if left[child] == 0:
                    ready.append(child)
        return order

    def descendants(self, task: str) -> list[str]:
        """Every task that depends on `task`, directly or not, in topological order."""
        seen: set[str] = set()
        todo = list(self.dependents[task])
        while todo:
            t = todo.pop()
            if t not in seen:
                seen.add(t)
                todo.extend(self.dependents[t])
        return [t for t in self.topological_order() if t in seen]

    def critical_path_s(self, duration_s: Mapping[str, float]) -> float:
        """The longest chain of durations: no schedule can finish faster."""
        finish: dict[str, float] = {}
        for task in self.topological_order():
            finish[task] = duration_s[task] + max((finish[d] for d in self.deps[task]), default=0.0)
        return max(finish.values(), default=0.0)

    def slack(self, duration: Mapping[str, float]) -> dict[str, float]:
        """How much later each task could finish without delaying the whole DAG (0: on a critical path), from
        each task's expected `duration`."""
        order = self.topological_order()
        finish: dict[str, float] = {}
        for task in order:
            finish[task] = duration[task] + max((finish[d] for d in self.deps[task]), default=0.0)
        end = max(finish.values(), default=0.0)
        latest: dict[str, float] = {}
        for task in reversed(order):
            latest[task] = min((latest[c] - duration[c] for c in self.dependents[task]), default=end)
        return {task: latest[task] - finish[task] for task in order}

    def width(self) -> int:
        """The most tasks on one level (level = longest dependency chain above the task)."""
        level: dict[str, int] = {}
        for task in self.topological_order():
            level[task] = 1 + max((level[d] for d in self.deps[task]), default=-1)
        counts: dict[int, int] = {}
        for lv in level.values():
            counts[lv] = counts.get(lv, 0) + 1
        return max(counts.values(), default=0)
