"""`controlplane run` writes report.html beside result.json; `controlplane report RUN` renders it again from the
run directory; `status --watch` shows the critical path, slowest agent and bottleneck; `run` says where the
metrics are, with Ray's dashboard on when it can be."""

import types

import pytest

from controlplane._core.timeline import deps_from_result
from controlplane.cli import EXIT_FAILED, EXIT_OK, main
from controlplane.cli.connect import dashboard_hint, init_ray
from controlplane.cli.report import write_run_dir
from controlplane.cli.watch import live_lines
from tests.helpers.synthetic_run import launch_run


@pytest.fixture
def run_dir(tmp_path):
    run = launch_run(waves=2)
    return write_run_dir(tmp_path, run.result, run.events), run


def test_the_run_dir_has_a_report_html_with_one_bar_per_attempt(run_dir):
    folder, run = run_dir
    html = (folder / "report.html").read_text()
    assert html.startswith("<!doctype html>") and html.count('class="bar') >= len(run.details)
    assert 'id="bottleneck"' in html and "copywriter" in html


@pytest.mark.parametrize("how", ["mission id", "path"])
def test_report_renders_again_from_the_run_directory(run_dir, tmp_path, capsys, how):
    folder, _ = run_dir
    (folder / "report.html").unlink()
    argv = ["report", folder.name, "--runs-dir", str(tmp_path)] if how == "mission id" else ["report", str(folder)]
    assert main(argv) == EXIT_OK
    assert (folder / "report.html").read_text().startswith("<!doctype html>")
    assert str(folder / "report.html") in capsys.readouterr().out


@pytest.mark.parametrize("command", [["report"], ["result"], ["logs"], ["audit", "verify"]])
def test_a_command_given_an_unknown_mission_names_the_recorded_ones_and_the_fix(run_dir, tmp_path, capsys, command):
    assert main([*command, "nope", "--runs-dir", str(tmp_path)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"No mission 'nope' is running or recorded; known: {run_dir[0].name}. Fix: " in err
    assert f"recorded outside {tmp_path}/ is found with --runs-dir DIR" in err


def test_watch_lines_show_the_critical_path_slowest_agent_and_bottleneck_live():
    run = launch_run(waves=1)
    deps = deps_from_result(run.result)
    halfway = [e for e in run.events if e["time_s"] <= run.events[0]["time_s"] + 12]
    path, slowest, bottleneck = live_lines(halfway, deps, now_s=run.events[0]["time_s"] + 12)
    assert path.startswith("  critical path (") and "(running: " in path
    assert slowest.startswith("  slowest agent: ") and bottleneck.startswith("  bottleneck: ")
    path, slowest, bottleneck = live_lines(run.events, deps, now_s=None)
    assert "plan -> research0 -> draft0 -> review0 -> final" in path and "running" not in path
    assert "slowest agent: copywriter" in slowest and "bottleneck: copywriter:" in bottleneck
    assert live_lines([], {}, now_s=1.0)[1] == "  slowest agent: none yet"


def test_status_watch_of_an_ended_mission_prints_its_final_critical_path(run_dir, tmp_path, capsys):
    folder, _ = run_dir
    assert main(["status", folder.name, "--runs-dir", str(tmp_path), "--watch"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "mission m-synthetic: succeeded" in out and "critical path (" in out and "bottleneck: copywriter" in out


def test_run_starts_ray_with_the_dashboard_when_it_can_and_says_where_the_metrics_are(monkeypatch, capsys):
    import ray

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        return types.SimpleNamespace(dashboard_url="127.0.0.1:8265",
                                     address_info={"node_ip_address": "10.0.0.5", "metrics_export_port": 9999})

    monkeypatch.setattr(ray, "init", fake_init)
    assert init_ray(None, verbose=False) is True
    assert seen["include_dashboard"] is None  # Ray's own rule: on when its dependencies are installed
    out = capsys.readouterr().out
    assert "Ray dashboard: http://127.0.0.1:8265" in out and "http://10.0.0.5:9999/metrics" in out


def test_without_the_dashboard_it_says_how_to_see_the_metrics():
    hint = dashboard_hint(None, "10.0.0.5", 9999)
    assert "ray[default]" in hint and "http://10.0.0.5:9999/metrics" in hint and "docs/observability.md" in hint
    assert "ray[default]" in dashboard_hint("", None, None)
