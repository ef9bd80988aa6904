"""Cycle finding over task dependencies, shared by spec validation and the DAG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a closed path, e.g. ['a', 'b', 'a'], or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in deps:
        if state.get(root):
            continue
        path, stack = [root], [iter(deps[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif nxt not in deps or state.get(nxt) == 2:
                continue
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            else:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return None


def format_cycle(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)
