"""report.html as a string: one bar per attempt, the critical path marked, the bottleneck named, nothing fetched."""

import re
from html.parser import HTMLParser

from controlplane._core.report_html import render_report_html
from controlplane._core.timeline import AttemptDetail, build_timeline, deps_from_result
from tests.helpers.synthetic_run import Step, agent, simulate, task


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text under each id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text_by_id: dict[str, str] = {}
        self._open_ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self._open_ids.append(attrs["id"])
            self.text_by_id[attrs["id"]] = ""

    def handle_data(self, data):
        for element_id in self._open_ids:
            self.text_by_id[element_id] += data

    def handle_endtag(self, tag):
        if self._open_ids and tag in ("p", "ol", "table", "svg"):
            self._open_ids.pop()

    def having(self, cls: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if cls in (a.get("class") or "").split()]


def run_with_a_retry_and_a_conflict():
    def plan(t, a, n):
        if (t, n) == ("research", 1):
            return Step(duration_s=1.0, error="ReplicaUnavailable: model 'default' timed out")
        queue = 6.0 if a == "copywriter" else 0.2
        return Step(duration_s=8.0 if a == "copywriter" else 2.0,
                    detail=AttemptDetail(queue_s=queue, model_s=1.5, tools_s={"web.search": 0.2}, model="default",
                                         usd=0.002, input_tokens=400, output_tokens=100))

    tasks = [task("plan", "lead"), task("research", "researcher", "plan"), task("draft", "copywriter", "research"),
             task("visuals", "designer", "plan"), task("review", "reviewer", "draft", "visuals")]
    run = simulate(tasks, [agent(n) for n in ("lead", "researcher", "copywriter", "designer", "reviewer")], plan)
    run.result["goal"] = "Launch <script>alert('x')</script> & win"
    run.result["conflicts"] = [{"topic": "launch date", "policy": "priority", "winner": "copywriter",
                                "reason": "copywriter ranks above designer"}]
    return run


def test_one_bar_per_attempt_with_the_critical_path_marked():
    run = run_with_a_retry_and_a_conflict()
    page = Elements()
    page.feed(render_report_html(run.result, run.events))
    bars = [a for a in page.having("bar") if "data-attempt" in a]
    assert sorted((a["data-task"], a["data-attempt"]) for a in bars) == sorted(
        [("plan", "1"), ("research", "1"), ("research", "2"), ("draft", "1"), ("visuals", "1"), ("review", "1")])
    assert {a["data-task"] for a in page.having("critical")} == {"plan", "research", "draft", "review"}
    assert next(a for a in bars if (a["data-task"], a["data-attempt"]) == ("research", "1"))["data-outcome"] == \
        "retrying"
    assert [a.get("data-task") for t, a in page.tags if t == "li" and "data-task" in a] == \
        ["plan", "research", "draft", "review"]
    assert {a["class"] for a in page.having("seg")} >= {"seg seg-queue", "seg seg-model", "seg seg-tool",
                                                         "seg seg-backoff"}


def test_the_headline_names_the_bottleneck():
    run = run_with_a_retry_and_a_conflict()
    page = Elements()
    page.feed(render_report_html(run.result, run.events))
    (headline,) = [a for t, a in page.tags if a.get("id") == "bottleneck"]
    assert (headline["data-kind"], headline["data-name"], headline["data-part"]) == ("agent", "copywriter", "queue")
    assert "copywriter: " in page.text_by_id["bottleneck"] and "router queue behind the `default` model" in \
        page.text_by_id["bottleneck"]


def test_mission_sections_show_conflicts_failures_budget_and_charts():
    run = run_with_a_retry_and_a_conflict()
    html = render_report_html(run.result, run.events)
    page = Elements()
    page.feed(html)
    assert "copywriter ranks above designer" in page.text_by_id["conflicts"]
    assert "ReplicaUnavailable: model 'default' timed out" in page.text_by_id["failures"]
    assert {a["data-metric"] for t, a in page.tags if t == "svg" and "data-metric" in a} == {"tokens", "usd",
                                                                                              "latency"}
    assert {a["data-budget"] for t, a in page.tags if "data-budget" in a} == {"max_tokens", "max_llm_calls",
                                                                              "max_wall_s", "max_usd"}
    assert len([a for a in page.having("chart-bar")]) == 3 * 5


def test_the_page_fetches_nothing_and_escapes_what_users_wrote():
    run = run_with_a_retry_and_a_conflict()
    html = render_report_html(run.result, run.events)
    assert "<script>alert" not in html and "Launch &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; win" in html
    assert not re.search(r"(?i)(https?:|//[a-z]|@import|url\(|src=)", html.replace('xmlns="http', ""))
    assert re.findall(r'href="([^"]*)"', html) == ["data:,"]


def test_detail_not_in_the_events_can_be_passed_in():
    run = simulate([task("a", "w")], [agent("w")], lambda t, a, n: Step(duration_s=2.0))
    html = render_report_html(run.result, run.events,
                              details={("a", 1): AttemptDetail(queue_s=1.5, model="big", usd=0.5)})
    assert "seg seg-queue" in html and "model big" in html and "$0.5000" in html


def test_a_thousand_tasks_render_with_one_bar_each():
    names = ["lead", "researcher", "copywriter", "reviewer"]
    tasks = [task(f"t{i}", names[i % 4], *([f"t{i - 4}"] if i >= 4 else [])) for i in range(1000)]
    run = simulate(tasks, [agent(n, max_concurrency=2) for n in names], lambda t, a, n: Step(duration_s=1.0))
    html = render_report_html(run.result, run.events)
    assert html.count("data-attempt=") == 1000
    timeline = build_timeline(run.events, deps_from_result(run.result))
    assert html.count('class="bar critical') == len(timeline.critical_path)
