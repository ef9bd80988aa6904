"""`report.html`: one self-contained page (inline CSS, SVG and a little JS; no request of any kind).

It shows the bottleneck in a headline, a Gantt timeline (one row per agent, one bar per task attempt split
into its segments, the critical path outlined), per-agent charts, and the mission: plan, conflicts,
failures and budget. Stable hooks for tests: `#bottleneck`, `#gantt .bar[data-attempt]`, `.bar.critical`,
`#critical-path li`, `svg.chart[data-metric]`, `#plan`, `#conflicts`, `#failures`, `#budget`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from controlplane._core.timeline import (
    AgentStats,
    AttemptDetail,
    Bar,
    Timeline,
    agent_stats,
    build_timeline,
    deps_from_result,
    find_bottleneck,
    name_bottleneck,
)

PLOT_W, LABEL_W, LANE_H, BAR_H, AXIS_H = 1000, 140, 14, 10, 22
OPEN_TABLE_ROWS = 100
MAX_LANES = 12
SEGMENT_LABELS = {"wait": "waiting (deps met, no free agent)", "queue": "queued at the router", "model": "model",
                  "tool": "tool", "other": "agent's own work", "backoff": "retry backoff"}
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
#bottleneck{font-size:18px;padding:10px 14px;background:#fff4e5;border-left:4px solid #e8590c;margin:12px 0}
.summary span{margin-right:18px}.muted{color:#667}
table{border-collapse:collapse;margin:4px 0}td,th{border-bottom:1px solid #dde;padding:3px 8px;text-align:left}
svg text{font:11px system-ui,sans-serif;fill:#334}
.seg-wait{fill:#ced4da}.seg-queue{fill:#f59f00}.seg-model{fill:#4c6ef5}.seg-tool{fill:#12b886}
.seg-other{fill:#a5d8ff}.seg-backoff{fill:#fa5252}.bar{cursor:pointer}.bar:hover rect{opacity:.8}
.outline{fill:none}.bar.critical .outline{stroke:#c92a2a;stroke-width:1.5}
.bar.failed .outline{stroke:#000;stroke-dasharray:2 2}
#critical-path{padding:0;margin:0;display:flex;flex-wrap:wrap;gap:2px 4px;list-style:none}
#critical-path li{background:#fff0f0;border:1px solid #ffc9c9;padding:0 6px;border-radius:3px}
#critical-path li+li::before{content:"→ ";color:#c92a2a}
.row-line{stroke:#eef}.tick{stroke:#dde}
body.only-critical .bar:not(.critical){opacity:.15}
.legend svg{vertical-align:middle;margin-left:10px}
.chart .chart-bar{fill:#4c6ef5}.chart .chart-max{fill:#c92a2a}
.meter{background:#eef;width:300px;height:10px;display:inline-block;vertical-align:middle}
.meter div{background:#4c6ef5;height:10px}.meter .over{background:#c92a2a}
#detail{white-space:pre-wrap;font-family:monospace;background:#f8f9fa;padding:6px;min-height:1.4em}
"""
JS = """
(function () {
  var detail = document.getElementById('detail');
  document.getElementById('gantt').addEventListener('click', function (ev) {
    var bar = ev.target.closest('.bar');
    if (bar) { detail.textContent = bar.querySelector('title').textContent; }
  });
  document.getElementById('only-critical').addEventListener('change', function (ev) {
    document.body.classList.toggle('only-critical', ev.target.checked);
  });
})();
"""


def render_report_html(result: Mapping[str, Any], events: Sequence[Mapping[str, Any]], *,
                       details: Mapping[tuple[str, int], AttemptDetail] | None = None) -> str:
    """The whole page, from `result.json` and `events.jsonl` (and per-attempt detail not in the events)."""
    timeline = build_timeline(events, deps_from_result(result), details=details)
    stats = agent_stats(timeline)
    title = escape(f"Mission {result.get('mission_id', '')}")
    body = [f"<h1>{title}</h1>", _summary(result, timeline, stats), _headline(timeline),
            _gantt(timeline), _critical_list(timeline), _agent_charts(stats), _plan(result, timeline),
            _conflicts(result), _failures(result, timeline), _budget(result, stats)]
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{title}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}<script>{JS}</script></body></html>\n")


def _summary(result: Mapping[str, Any], timeline: Timeline, stats: Mapping[str, AgentStats]) -> str:
    usage = result.get("usage", {})
    usd = usage.get("usd", sum(s.usd for s in stats.values()))
    items = [("Goal", result.get("goal", "")), ("Status", f"{result.get('status', '')} {result.get('reason') or ''}"),
             ("Wall time", f"{result.get('wall_s', timeline.makespan_s):.1f} s"),
             ("Start-up", f"{timeline.startup_s:.1f} s"), ("Tokens", usage.get("tokens", 0)),
             ("Model calls", usage.get("llm_calls", 0)), ("Cost", f"${usd:.4f}"),
             ("Attempts", len(timeline.bars))]
    return "<p class=\"summary\">" + "".join(f"<span><b>{k}:</b> {escape(str(v))}</span>" for k, v in items) + "</p>"


def _headline(timeline: Timeline) -> str:
    found = find_bottleneck(timeline)
    attrs = (f' data-kind="{escape(found.kind)}" data-name="{escape(found.name)}" data-part="{found.part}"'
             if found else "")
    return f"<p id=\"bottleneck\"{attrs}><b>Bottleneck.</b> {escape(name_bottleneck(timeline))}</p>"


def _lanes(bars: Sequence[Bar]) -> dict[int, int]:
    """A lane per bar (by index) so that one agent's bars never overlap, waiting included; when the waits
    would need more than MAX_LANES lanes, only the running parts are kept apart (waits may hide)."""
    for begin in (lambda b: b.ready_s, lambda b: b.start_s):
        ends: list[float] = []
        out = {}
        for i, bar in sorted(enumerate(bars), key=lambda ib: (begin(ib[1]), ib[1].task)):
            lane = next((n for n, end in enumerate(ends) if end <= begin(bar) + 1e-9), len(ends))
            if lane == len(ends):
                ends.append(0.0)
            ends[lane] = bar.finish_s
            out[i] = lane
        if len(ends) <= MAX_LANES:
            break
    return out


def _gantt(timeline: Timeline) -> str:
    critical = set(timeline.critical_path)
    origin_s = timeline.startup_s
    span_s = max(max((b.finish_s for b in timeline.bars), default=0.0) - origin_s, 1e-3)
    scale = _Scale(origin_s=origin_s, px_per_s=PLOT_W / span_s)
    by_agent: dict[str, list[Bar]] = {}
    for bar in timeline.bars:
        by_agent.setdefault(bar.agent, []).append(bar)
    waits, bars, labels, y = [], [], [], AXIS_H
    for agent, rows in by_agent.items():
        lanes = _lanes(rows)
        height = (max(lanes.values()) + 1) * LANE_H
        labels.append(f'<text x="4" y="{y + 11}">{escape(agent)}</text>'
                      f'<line class="row-line" x1="0" x2="{LABEL_W + PLOT_W}" y1="{y + height}" y2="{y + height}"/>')
        for i, bar in enumerate(rows):
            top = y + lanes[i] * LANE_H + (LANE_H - BAR_H) / 2
            waits += [_rect(s.kind, s.start_s, s.end_s, scale, top + BAR_H / 2 - 1.5, 3) for s in bar.segments
                      if s.kind == "wait"]
            bars.append(_bar(bar, top, scale, bar.task in critical))
        y += height
    return (f"<h2>Timeline</h2><p class=\"muted\">0 s is when the first task became ready, "
            f"{origin_s:.1f} s after the mission started (agents starting, planning).</p>"
            f"<p class=\"legend\">{_legend()}<label><input type=\"checkbox\" id=\"only-critical\">"
            f" critical path only</label></p><svg id=\"gantt\" width=\"{LABEL_W + PLOT_W + 10}\" height=\"{y + 4}\" "
            f"role=\"img\" aria-label=\"timeline\">{_axis(span_s, scale, y)}{''.join(labels)}"
            f"<g class=\"waits\">{''.join(waits)}</g><g class=\"bars\">{''.join(bars)}</g></svg>"
            "<div id=\"detail\" class=\"muted\">Click a bar for its detail.</div>")


def _legend() -> str:
    return "".join(f'<svg width="14" height="10"><rect class="seg-{kind}" width="12" height="10"/></svg> {label} '
                   for kind, label in SEGMENT_LABELS.items())


@dataclass(frozen=True, kw_only=True)
class _Scale:
    """Seconds since the mission started to x pixels."""

    origin_s: float
    px_per_s: float

    def x(self, t_s: float) -> float:
        return LABEL_W + (t_s - self.origin_s) * self.px_per_s


def _axis(span_s: float, scale: _Scale, bottom: float) -> str:
    step = next(s for s in (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 1e9)
                if span_s / s <= 12)
    out, t = [], 0.0
    while t <= span_s + 1e-9:
        x = scale.x(scale.origin_s + t)
        out.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{AXIS_H - 4}" y2="{bottom}"/>'
                   f'<text x="{x + 2:.1f}" y="12">{t:g} s</text>')
        t += step
    return "".join(out)


def _rect(kind: str, start_s: float, end_s: float, scale: _Scale, top: float, height: float) -> str:
    width = max(0.5, (end_s - start_s) * scale.px_per_s)
    return (f'<rect class="seg seg-{kind}" x="{scale.x(start_s):.1f}" y="{top:.1f}" '
            f'width="{width:.1f}" height="{height:g}"/>')


def _bar(bar: Bar, top: float, scale: _Scale, critical: bool) -> str:
    classes = "bar" + (" critical" if critical else "") + (" failed" if bar.outcome not in ("succeeded", "running")
                                                           else "")
    parts = [_rect(s.kind, s.start_s, s.end_s, scale, top, BAR_H) for s in bar.segments if s.kind != "wait"]
    x0, x1 = scale.x(bar.start_s), scale.x(bar.finish_s)
    outline = f'<rect class="outline" x="{x0:.1f}" y="{top:.1f}" width="{max(0.5, x1 - x0):.1f}" height="{BAR_H}"/>'
    spent = ", ".join(f"{SEGMENT_LABELS[s.kind]} {s.duration_s:.2f} s" for s in bar.segments)
    d = bar.detail
    info = (f"{bar.task} attempt {bar.attempt} on {bar.agent}: {bar.outcome} after {bar.end_s - bar.start_s:.2f} s"
            f" ({spent}); model {d.model or '-'}, {d.input_tokens}+{d.output_tokens} tokens, ${d.usd:.4f}"
            + (f"; {bar.message}" if bar.message else ""))
    return (f'<g class="{classes}" data-task="{escape(bar.task)}" data-agent="{escape(bar.agent)}" '
            f'data-attempt="{bar.attempt}" data-outcome="{bar.outcome}"><title>{escape(info)}</title>'
            f'{"".join(parts)}{outline}</g>')


def _critical_list(timeline: Timeline) -> str:
    per_task: dict[str, float] = {}
    for part in timeline.path_parts:
        per_task[part.task] = per_task.get(part.task, 0.0) + part.seconds
    items = "".join(f'<li data-task="{escape(t)}">{escape(t)}: {per_task.get(t, 0.0):.2f} s</li>'
                    for t in timeline.critical_path)
    return (f"<h2>Critical path ({timeline.critical_s:.2f} s of a {timeline.makespan_s:.2f} s run)</h2>"
            f"<ol id=\"critical-path\">{items}</ol>")


def _chart(metric: str, title: str, values: Mapping[str, float], fmt: str,
           maxima: Mapping[str, float] | None = None) -> str:
    top = max([*values.values(), *(maxima or {}).values(), 1e-12])
    rows, width = [], 260
    for i, (agent, value) in enumerate(values.items()):
        y = 20 + i * 18
        rows.append(f'<text x="0" y="{y + 10}">{escape(agent)}</text><rect class="chart-bar" '
                    f'data-agent="{escape(agent)}" x="110" y="{y}" width="{value / top * width:.1f}" height="12"/>'
                    f'<text x="{116 + max(value, (maxima or {}).get(agent, 0.0)) / top * width:.1f}" y="{y + 10}">'
                    f'{format(value, fmt)}</text>')
        if maxima:
            rows.append(f'<rect class="chart-max" x="{110 + maxima[agent] / top * width:.1f}" y="{y}" '
                        f'width="2" height="12"/>')
    return (f'<svg class="chart" data-metric="{metric}" width="440" height="{28 + 18 * len(values)}" role="img" '
            f'aria-label="{escape(title)}"><text x="0" y="12"><tspan font-weight="bold">{escape(title)}</tspan>'
            f'</text>{"".join(rows)}</svg>')


def _agent_charts(stats: Mapping[str, AgentStats]) -> str:
    return ("<h2>Agents</h2><div id=\"agents\">"
            + _chart("tokens", "Tokens", {a: s.tokens for a, s in stats.items()}, ",.0f")
            + _chart("usd", "Dollars", {a: s.usd for a, s in stats.items()}, ".4f")
            + _chart("latency", "Attempt latency, s (p50; red: max)", {a: s.latency_p50_s for a, s in stats.items()},
                     ".2f", {a: s.latency_max_s for a, s in stats.items()})
            + "</div>")


def _table(table_id: str, head: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> str:
    if not rows:
        return f'<p id="{table_id}" class="muted">{escape(empty)}</p>'
    cells = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<table id="{table_id}"><thead><tr>{"".join(f"<th>{escape(h)}</th>" for h in head)}</tr></thead>'
            f"<tbody>{cells}</tbody></table>")


def _plan(result: Mapping[str, Any], timeline: Timeline) -> str:
    plan = result.get("plan", {})
    critical = set(timeline.critical_path)
    rows = [(t["id"], t.get("agent") or "-", ", ".join(t.get("depends_on") or []) or "-",
             t.get("parent") or "-", t.get("status", ""), t.get("attempts", 0), "yes" if t["id"] in critical else "")
            for t in result.get("tasks", [])]
    repairs = "".join(f"<li>{escape(r)}</li>" for r in plan.get("repairs", []))
    return (f"<h2>Plan ({escape(str(plan.get('mode', 'declared')))}, {len(rows)} tasks)</h2>"
            + f"<details{' open' if len(rows) <= OPEN_TABLE_ROWS else ''}><summary>tasks</summary>"
            + _table("plan", ["Task", "Agent", "Depends on", "Delegated by", "Status", "Attempts", "Critical"],
                     rows, "No tasks.") + "</details>"
            + (f"<p>Plan repairs:</p><ul id=\"repairs\">{repairs}</ul>" if repairs else ""))


def _conflicts(result: Mapping[str, Any]) -> str:
    rows = [(c.get("topic", ""), c.get("policy", ""), c.get("winner") or "synthesis", c.get("reason", ""))
            for c in result.get("conflicts", [])]
    return "<h2>Conflicts and decisions</h2>" + _table("conflicts", ["Topic", "Policy", "Stands", "Why"], rows,
                                                      "No conflicts.")


def _failures(result: Mapping[str, Any], timeline: Timeline) -> str:
    rows = [(b.task, b.attempt, b.agent, b.outcome, b.message) for b in timeline.bars
            if b.outcome not in ("succeeded", "running")]
    seen = {(r[0], r[3]) for r in rows}
    rows += [(t["id"], t.get("attempts", 0), t.get("agent") or "-", t["status"], t.get("error") or "")
             for t in result.get("tasks", []) if t.get("status") in ("failed", "skipped", "cancelled")
             and (t["id"], t["status"]) not in seen]
    return "<h2>Failures</h2>" + _table("failures", ["Task", "Attempt", "Agent", "Outcome", "Reason"], rows,
                                       "No failures.")


def _budget(result: Mapping[str, Any], stats: Mapping[str, AgentStats]) -> str:
    budgets, usage = result.get("budgets") or {}, result.get("usage", {})
    used = {"max_tokens": usage.get("tokens", 0), "max_llm_calls": usage.get("llm_calls", 0),
            "max_wall_s": result.get("wall_s", 0.0), "max_usd": usage.get("usd", sum(s.usd for s in stats.values()))}
    rows = []
    for key, value in used.items():
        cap = budgets.get(key)
        share = value / cap if cap else 0.0
        meter = (f'<span class="meter"><div class="{"over" if share >= 1 else ""}" '
                 f'style="width:{min(share, 1) * 100:.1f}%"></div></span> {share:.0%}' if cap else "no cap")
        rows.append(f'<tr data-budget="{key}"><td>{key[4:]}</td><td>{value:,.4g}</td>'
                    f'<td>{"-" if cap is None else f"{cap:,.4g}"}</td><td>{meter}</td></tr>')
    return ("<h2>Budget</h2><table id=\"budget\"><thead><tr><th>Budget</th><th>Used</th><th>Cap</th><th></th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
