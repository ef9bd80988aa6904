"""`controlplane status RUN --watch`: the mission as it runs: its critical path so far, the slowest agent and
the bottleneck, from the supervisor's event stream (attempts still running count up to now)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controlplane._core.timeline import build_timeline, deps_from_result, name_bottleneck, slowest_agent

PATH_HEAD, PATH_TAIL = 3, 5
CLEAR = "\x1b[2J\x1b[H"


def live_lines(events: Sequence[Mapping[str, Any]], deps: Mapping[str, Sequence[str]], *,
               now_s: float | None) -> list[str]:
    """Critical path, slowest agent and bottleneck of a run so far (`now_s` None: an ended run)."""
    timeline = build_timeline(events, deps, now_s=now_s)
    path = list(timeline.critical_path)
    if len(path) > PATH_HEAD + PATH_TAIL:
        path = [*path[:PATH_HEAD], f"... {len(path) - PATH_HEAD - PATH_TAIL} more ...", *path[-PATH_TAIL:]]
    running = sorted({b.task for b in timeline.bars if b.outcome == "running"} & set(timeline.critical_path))
    lines = [f"  critical path ({timeline.critical_s:.1f} s): {' -> '.join(path) or 'none yet'}"
             + (f" (running: {', '.join(running)})" if running else "")]
    slowest = slowest_agent(timeline)
    if slowest is None:
        lines.append("  slowest agent: none yet")
    else:
        name, stats = slowest
        lines.append(f"  slowest agent: {name} (median attempt {stats.latency_p50_s:.2f} s, longest "
                     f"{stats.latency_max_s:.2f} s, {stats.attempts} attempts, busy {stats.busy_s:.1f} s)")
    lines.append(f"  bottleneck: {name_bottleneck(timeline)}")
    return lines


def watch(handle: Any, format_summary: Callable[[dict[str, Any]], str], *, interval_s: float = 2.0,
          write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Print the mission's summary and live lines every `interval_s` until it ends; return the last summary."""
    import ray

    write = write or _writer()
    events: list[dict[str, Any]] = []
    deps: dict[str, list[str]] = {}
    while True:
        done = ray.get(handle.wait.remote(interval_s))
        new = ray.get(handle.events_since.remote(len(events)))
        events += new
        summary = ray.get(handle.summary.remote())
        if any(e.get("task") and e["task"] not in deps for e in new):  # planned or delegated tasks: new deps
            deps = deps_from_result(ray.get(handle.result.remote()))
        write("\n".join([format_summary(summary), *live_lines(events, deps, now_s=None if done else clock())]))
        if done:
            return summary


def _writer() -> Callable[[str], None]:
    tty = sys.stdout.isatty()
    return lambda text: print((CLEAR if tty else "") + text + ("" if tty else "\n"), flush=True)
