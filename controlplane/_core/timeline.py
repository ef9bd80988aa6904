"""A mission's timeline from its event stream: one bar per task attempt, the critical path, the bottleneck.

Pure: no Ray, no I/O, no clock (a live view passes `now_s`). Input is the mission's events as dicts
(`Event.to_dict()`), the task dependencies, and optional per-attempt detail. A bar is split into
segments: `wait` (dependencies met, no free agent yet), `queue` (in the router queue), `model`, `tool`,
`other` (the attempt's own time outside model and tools: memory, parsing, hops) and `backoff` (after a
failed attempt, before the retry became ready).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

ATTEMPT_ENDS = frozenset({"succeeded", "failed", "retrying", "fallback", "cancelled"})
QUEUEING_PARTS = frozenset({"wait", "queue", "gap"})
MIN_WAIT_S = 1e-3  # shorter waits are the supervisor's own hop, not waiting for an agent


@dataclass(frozen=True, kw_only=True)
class AttemptDetail:
    """What one task attempt spent its running time on. The agent reports it in the attempt's event data
    under the same keys (see `from_data`)."""

    queue_s: float = 0.0
    """Seconds the attempt's model calls waited in the router (admission and the model's gate)."""
    model_s: float = 0.0
    """Seconds of model work (router start of generation to the last token), summed over the model calls."""
    tools_s: Mapping[str, float] = field(default_factory=dict)
    """Seconds spent in each tool, by tool name."""
    usd: float = 0.0
    """Dollars the attempt cost (model calls and priced tools)."""
    model: str | None = None
    """The model that served the attempt's calls (the last one, after any fallback)."""
    input_tokens: int = 0
    """Prompt tokens over the attempt's model calls."""
    output_tokens: int = 0
    """Completion tokens over the attempt's model calls."""

    @property
    def tool_s(self) -> float:
        return sum(self.tools_s.values())

    def to_data(self) -> dict[str, Any]:
        """The detail as event data: the keys `from_data` reads, zero and empty ones left out."""
        data = {"queue_s": round(self.queue_s, 6), "model_s": round(self.model_s, 6),
                "tools_s": {k: round(v, 6) for k, v in self.tools_s.items()}, "usd": round(self.usd, 8),
                "model": self.model, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        return {k: v for k, v in data.items() if v not in (None, 0, 0.0, {})}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> AttemptDetail:
        """Read the detail from an attempt's event data; missing keys are zero."""
        tokens = int(data.get("tokens", 0))
        return cls(queue_s=float(data.get("queue_s", 0.0)), model_s=float(data.get("model_s", 0.0)),
                   tools_s={str(k): float(v) for k, v in (data.get("tools_s") or {}).items()},
                   usd=float(data.get("usd", 0.0)), model=data.get("model"),
                   input_tokens=int(data.get("input_tokens", tokens)), output_tokens=int(data.get("output_tokens", 0)))


@dataclass(frozen=True, kw_only=True)
class Segment:
    """A stretch of one bar. Times are seconds since the mission started."""

    kind: str
    """wait, queue, model, tool, other or backoff."""
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, kw_only=True)
class Bar:
    """One task attempt: from becoming ready to its end (and the retry backoff after it, if any)."""

    task: str
    agent: str
    attempt: int
    outcome: str
    """succeeded, failed, retrying, fallback, cancelled, or running (a live view)."""
    ready_s: float
    start_s: float
    end_s: float
    segments: tuple[Segment, ...]
    detail: AttemptDetail
    message: str = ""
    """Why it failed, for failed attempts."""

    @property
    def finish_s(self) -> float:
        """The end of the bar's last segment (past `end_s` when a backoff follows)."""
        return self.segments[-1].end_s if self.segments else self.end_s


@dataclass(frozen=True, kw_only=True)
class PathPart:
    """Seconds of the critical path spent on one thing: `part` is wait, queue, model, tool, other, retry or gap."""

    task: str
    agent: str
    part: str
    seconds: float
    model: str | None = None
    tool: str | None = None


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """Bars in start order, the critical path (first task to last) and what it is made of."""

    bars: tuple[Bar, ...]
    critical_path: tuple[str, ...]
    critical_s: float
    """From the first task on the path becoming ready to the last one ending."""
    path_parts: tuple[PathPart, ...]
    startup_s: float
    """From the mission's first event to its first ready task: actor start-up and planning."""
    makespan_s: float
    """From the mission's first event to the last attempt's end."""


@dataclass(frozen=True, kw_only=True)
class Bottleneck:
    """The agent, model or tool with the largest share of the critical path, and what that share was."""

    kind: str
    """agent, model, tool or control plane."""
    name: str
    share: float
    """Of the critical path, 0..1."""
    part: str
    """The largest part of that share: wait, queue, model, tool, other, retry or gap."""
    part_share: float
    """Of the bottleneck's own share, 0..1."""
    queueing: bool
    """True when that part is waiting (for an agent, the router queue, the control plane), False for work."""
    sentence: str


def build_timeline(events: Iterable[Mapping[str, Any]], deps: Mapping[str, Sequence[str]], *,
                   details: Mapping[tuple[str, int], AttemptDetail] | None = None,
                   now_s: float | None = None) -> Timeline:
    """Bars, critical path and path parts of a run. Attempts still running end at `now_s` (a live view)."""
    ordered = sorted(events, key=lambda e: (e.get("seq", 0), e.get("time_s", 0.0)))
    origin_s = ordered[0]["time_s"] if ordered else 0.0
    bars = _bars([e for e in ordered if e.get("kind") == "task"], origin_s, details or {}, now_s)
    first_ready = _first_ready(ordered, origin_s)
    path = _critical_path(bars, deps, first_ready)
    parts = _path_parts(path, bars, first_ready)
    end_s = max((b.end_s for b in bars), default=0.0)
    critical_s = (max(b.end_s for b in bars if b.task == path[-1]) - first_ready[path[0]]) if path else 0.0
    return Timeline(bars=tuple(sorted(bars, key=lambda b: (b.start_s, b.task, b.attempt))),
                    critical_path=tuple(path), critical_s=critical_s, path_parts=tuple(parts),
                    startup_s=min(first_ready.values(), default=0.0), makespan_s=end_s)


def deps_from_result(result: Mapping[str, Any]) -> dict[str, list[str]]:
    """Task dependencies from a `result.json` record."""
    return {t["id"]: list(t.get("depends_on") or []) for t in result.get("tasks", [])}


def _first_ready(events: Sequence[Mapping[str, Any]], origin_s: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in events:
        if e.get("kind") == "task" and e.get("status") == "ready":
            out.setdefault(e["task"], e["time_s"] - origin_s)
    return out


def _bars(events: Sequence[Mapping[str, Any]], origin_s: float, details: Mapping[tuple[str, int], AttemptDetail],
          now_s: float | None) -> list[Bar]:
    ready_at: dict[str, float] = {}
    open_: dict[str, dict[str, Any]] = {}
    backoff_of: dict[str, int] = {}
    bars: list[Bar] = []
    for e in events:
        if e.get("kind", "task") != "task" or not e.get("task"):
            continue  # mission, conflict and budget events open and close no attempt
        task, status, t = str(e["task"]), e.get("status"), e["time_s"] - origin_s
        if status == "ready":
            ready_at[task] = t
            if task in backoff_of:
                index = backoff_of.pop(task)
                bars[index] = _with_backoff(bars[index], t)
        elif status == "running":
            open_[task] = {"agent": e.get("agent") or "?", "attempt": int(e.get("attempt") or 1),
                           "ready_s": ready_at.get(task, t), "start_s": t}
        elif status in ATTEMPT_ENDS and task in open_:
            run = open_.pop(task)
            detail = details.get((task, run["attempt"])) or AttemptDetail.from_data(e.get("data") or {})
            bars.append(_bar(task, run, status, t, detail, e.get("message", "")))
            if status == "retrying":
                backoff_of[task] = len(bars) - 1
    end_s = (now_s - origin_s) if now_s is not None else max((b.end_s for b in bars), default=0.0)
    for task, run in open_.items():
        detail = details.get((task, run["attempt"])) or AttemptDetail()
        bars.append(_bar(task, run, "running", max(end_s, run["start_s"]), detail, ""))
    return bars


def _bar(task: str, run: Mapping[str, Any], outcome: str, end_s: float, detail: AttemptDetail, message: str) -> Bar:
    start_s = run["start_s"]
    running_s = end_s - start_s
    spent = [("queue", detail.queue_s), ("model", detail.model_s), ("tool", detail.tool_s)]
    total = sum(s for _, s in spent)
    scale = running_s / total if total > running_s > 0 else 1.0
    waited_s = start_s - run["ready_s"]
    segments = [Segment(kind="wait", start_s=run["ready_s"], end_s=start_s)] if waited_s >= MIN_WAIT_S else []
    at = start_s
    for kind, seconds in spent:
        if seconds > 0:
            segments.append(Segment(kind=kind, start_s=at, end_s=at + seconds * scale))
            at += seconds * scale
    if end_s > at:
        segments.append(Segment(kind="other", start_s=at, end_s=end_s))
    return Bar(task=task, agent=run["agent"], attempt=run["attempt"], outcome=outcome, ready_s=run["ready_s"],
               start_s=start_s, end_s=end_s, segments=tuple(segments), detail=detail, message=message)


def _with_backoff(bar: Bar, until_s: float) -> Bar:
    if until_s <= bar.end_s:
        return bar
    backoff = Segment(kind="backoff", start_s=bar.end_s, end_s=until_s)
    return replace(bar, segments=(*bar.segments, backoff))


def _critical_path(bars: Sequence[Bar], deps: Mapping[str, Sequence[str]], first_ready: Mapping[str, float]
                   ) -> list[str]:
    """Walk back from the task that ended last, each time to the dependency that ended last."""
    ended: dict[str, float] = {}
    for bar in bars:
        ended[bar.task] = max(ended.get(bar.task, 0.0), bar.end_s)
    if not ended:
        return []
    task: str | None = max(ended, key=lambda t: (ended[t], t))
    path: list[str] = []
    while task is not None and task not in path:
        path.append(task)
        known = [d for d in deps.get(task, ()) if d in ended]
        task = max(known, key=lambda d: (ended[d], d)) if known else None
    return [t for t in reversed(path) if t in first_ready]


def _path_parts(path: Sequence[str], bars: Sequence[Bar], first_ready: Mapping[str, float]) -> list[PathPart]:
    parts: list[PathPart] = []
    previous_end: float | None = None
    for task in path:
        attempts = sorted((b for b in bars if b.task == task), key=lambda b: b.attempt)
        if previous_end is not None and first_ready[task] > previous_end:
            parts.append(PathPart(task=task, agent="control plane", part="gap",
                                  seconds=first_ready[task] - previous_end))
        for i, bar in enumerate(attempts):
            last = i == len(attempts) - 1
            parts += _bar_parts(bar, retry=not last)
        previous_end = attempts[-1].end_s
    return [p for p in parts if p.seconds > 0]


def _bar_parts(bar: Bar, *, retry: bool) -> list[PathPart]:
    out = []
    tools = sorted(bar.detail.tools_s.items(), key=lambda kv: -kv[1])
    for seg in bar.segments:
        part = "retry" if retry and seg.kind != "wait" else seg.kind
        if part == "tool" and tools:
            total = bar.detail.tool_s
            out += [PathPart(task=bar.task, agent=bar.agent, part="tool", tool=name, model=bar.detail.model,
                             seconds=seg.duration_s * s / total) for name, s in tools]
            continue
        out.append(PathPart(task=bar.task, agent=bar.agent, part="retry" if part == "backoff" else part,
                            model=bar.detail.model, seconds=seg.duration_s))
    return out


def find_bottleneck(timeline: Timeline) -> Bottleneck | None:
    """The agent, model or tool with the largest share of the critical path; ties go to the agent.

    An agent's share is all its time on the path; a model's is the time callers waited in its router
    queue (its generation time counts for the agent that asked); a tool's is the time spent in it."""
    total = sum(p.seconds for p in timeline.path_parts)
    if total <= 0:
        return None
    groups: dict[tuple[int, str, str], list[PathPart]] = {}
    for p in timeline.path_parts:
        if p.part == "gap":
            groups.setdefault((0, "control plane", "control plane"), []).append(p)
            continue
        groups.setdefault((0, "agent", p.agent), []).append(p)
        if p.model is not None and p.part == "queue":  # a shared model is a bottleneck when callers wait for it
            groups.setdefault((1, "model", p.model), []).append(p)
        if p.tool is not None:
            groups.setdefault((2, "tool", p.tool), []).append(p)
    (_, kind, name), members = max(groups.items(), key=lambda kv: (sum(p.seconds for p in kv[1]), -kv[0][0]))
    own = sum(p.seconds for p in members)
    by_part: dict[tuple[str, str | None], float] = {}
    for p in members:
        key = (p.part, p.model if p.part in ("queue", "model") else p.tool)
        by_part[key] = by_part.get(key, 0.0) + p.seconds
    (part, what), seconds = max(by_part.items(), key=lambda kv: kv[1])
    share, part_share = own / total, seconds / own
    label = name if kind == "agent" else f"{kind} `{name}`" if kind != "control plane" else name
    how_much = "all of it" if part_share >= 0.995 else f"{part_share:.0%} of it"
    sentence = f"{label}: {share:.0%} of the critical path, {how_much} {_describe(part, what, kind)}"
    return Bottleneck(kind=kind, name=name, share=share, part=part, part_share=part_share,
                      queueing=part in QUEUEING_PARTS, sentence=sentence)


def _describe(part: str, what: str | None, kind: str) -> str:
    model = f" behind the `{what}` model" if what and kind != "model" else ""
    return {
        "wait": "waiting for a free slot on the agent (queueing: raise max_concurrency or add agents of its role)",
        "queue": f"waiting in the router queue{model} (queueing)",
        "model": f"model work{' on the `' + what + '` model' if what and kind != 'model' else ''} (work)",
        "tool": f"running the tool `{what}` (work)" if kind != "tool" else "running it (work)",
        "other": "the agent's own work outside model and tool calls (work: memory, parsing, hops)",
        "retry": "in failed attempts and retry backoff",
        "gap": "between a task ending and its dependents starting (scheduling)",
    }[part]


def name_bottleneck(timeline: Timeline) -> str:
    """One sentence naming the bottleneck and its reason, e.g. "copywriter: 41% of the critical path, 70% of it
    waiting in the router queue behind the `default` model (queueing)"."""
    found = find_bottleneck(timeline)
    return found.sentence if found else "No task ran, so there is no critical path and no bottleneck."


@dataclass(frozen=True, kw_only=True)
class AgentStats:
    """One agent's totals over a run, for the per-agent charts."""

    attempts: int
    failed_attempts: int
    tokens: int
    usd: float
    busy_s: float
    latency_p50_s: float
    latency_max_s: float


def agent_stats(timeline: Timeline) -> dict[str, AgentStats]:
    """Tokens, dollars, busy time and attempt latency per agent, sorted by agent name."""
    by_agent: dict[str, list[Bar]] = {}
    for bar in timeline.bars:
        by_agent.setdefault(bar.agent, []).append(bar)
    out = {}
    for agent in sorted(by_agent):
        bars = by_agent[agent]
        latencies = sorted(b.end_s - b.start_s for b in bars)
        out[agent] = AgentStats(
            attempts=len(bars), failed_attempts=sum(b.outcome not in ("succeeded", "running") for b in bars),
            tokens=sum(b.detail.input_tokens + b.detail.output_tokens for b in bars),
            usd=sum(b.detail.usd for b in bars), busy_s=sum(latencies),
            latency_p50_s=latencies[(len(latencies) - 1) // 2], latency_max_s=latencies[-1])
    return out


def slowest_agent(timeline: Timeline) -> tuple[str, AgentStats] | None:
    """The agent whose attempts take longest (median attempt, running ones up to now; ties: more busy time)."""
    stats = agent_stats(timeline)
    if not stats:
        return None
    name = max(stats, key=lambda a: (stats[a].latency_p50_s, stats[a].busy_s, a))
    return name, stats[name]
