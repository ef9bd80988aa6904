"""docs/grafana/controlplane.json: a Grafana dashboard whose every query names a metric the code declares, with
the suffix Ray's Prometheus export gives that metric's kind and only labels that metric carries."""

import json
import re
from pathlib import Path

from ray.util import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "controlplane.json"
SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
SERIES = re.compile(r"\bray_(controlplane_[a-z0-9_]+)(\{[^}]*\})?")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


def declared_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """{name: (kind, label names)} of every metric the mission and router metric holders declare."""
    from actors._metrics import MissionMetrics
    from serving._router import _Metrics

    out = {}
    for holder in (MissionMetrics("m"), _Metrics()):
        for metric in vars(holder).values():
            if isinstance(metric, metrics.Metric):
                out[metric.info["name"]] = (type(metric).__name__, tuple(metric.info["tag_keys"]))
    return out


def queries(dashboard: dict) -> list[str]:
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return panel_exprs + [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def split_series(name_with_suffix: str, known: dict) -> tuple[str, str]:
    for name in sorted(known, key=len, reverse=True):
        if name_with_suffix.startswith(name):
            return name, name_with_suffix[len(name):]
    raise AssertionError(f"ray_{name_with_suffix} names no metric the code declares; declared: {sorted(known)}")


def test_the_dashboard_loads_like_rays_own():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "controlplane" and dashboard["title"] and dashboard["schemaVersion"] >= 27
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(graphs) >= 8 and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_every_query_names_a_declared_metric_with_its_labels():
    known = declared_metrics()
    used = set()
    for expr in queries(json.loads(DASHBOARD.read_text())):
        series = SERIES.findall(expr)
        assert series, f"no controlplane metric in {expr!r}"
        grouped = {g.strip() for group in GROUPING.findall(expr) for g in group.split(",")}
        for name_with_suffix, selector in series:
            name, suffix = split_series(name_with_suffix, known)
            kind, labels = known[name]
            assert suffix in SUFFIXES[kind], f"{name} is a {kind}: Ray exports it as {SUFFIXES[kind]}, not {suffix!r}"
            allowed = set(labels) | ({"le"} if suffix == "_bucket" else set())
            selected = set(re.findall(r"([a-z_]+)\s*=~?", selector))
            assert selected <= allowed, f"{name} has labels {labels}, the query selects {selected}"
            used.add(name)
        label_sets = [set(known[split_series(s, known)[0]][1]) | {"le"} for s, _ in series]
        assert all(grouped <= labels for labels in label_sets), f"{expr!r} groups by {grouped}"
    assert used == set(known), f"metrics without a panel: {sorted(set(known) - used)}"
