import json

from controlplane.cli.progress import PlainProgress, event_line
from controlplane.cli.report import per_agent, render_report, write_run_dir


def result():
    task = {"id": "a", "agent": "w", "status": "succeeded", "output": {"k": 1}, "attempts": 2, "error": None,
            "tokens": {"prompt": 5, "completion": 7}, "started_at": 10.0, "ended_at": 12.5, "depends_on": []}
    failed = dict(task, id="b", status="failed", output=None, error="boom", attempts=1)
    return {"mission_id": "m-1", "goal": "g", "status": "failed", "reason": "task 'b' failed", "wall_s": 3.0,
            "tasks": [task, failed], "usage": {"tokens": 30, "usd": 0.25, "llm_calls": 3,
                                                      "by_agent": {"w": {"tokens": 30, "usd": 0.25}}},
            "control_plane": {"tokens": 0, "llm_calls": 0},
            "conflicts": [{"topic": "date", "policy": "priority", "winner": "w", "reason": "ranks above"}],
            "plan": {"repairs": ["removed self-dependency"]}}


def test_run_dir_has_result_events_and_report(tmp_path):
    events = [{"seq": 0, "time_s": 10.0, "kind": "task", "task": "b", "status": "running", "agent": "w", "attempt": 1},
              {"seq": 1, "time_s": 11.0, "kind": "task", "task": "b", "status": "failed", "agent": "w", "attempt": 1}]
    out = write_run_dir(tmp_path, result(), events)
    assert out == tmp_path / "m-1"
    assert json.loads((out / "result.json").read_text())["tasks"][0]["output"] == {"k": 1}
    assert [json.loads(line)["seq"] for line in (out / "events.jsonl").read_text().splitlines()] == [0, 1]
    report = (out / "report.md").read_text()
    assert "| w | 2 | 30 | 0.2500 | 5.0 |" in report  # tokens and USD the router charged, busy time
    assert "30 ($0.2500) in 3 model calls" in report
    assert "_failed: boom_" in report and "removed self-dependency" in report and "ranks above" in report


def test_per_agent_sums_tokens_and_busy_time():
    assert per_agent(result()) == {"w": {"tasks": 2, "tokens": 24, "busy_s": 5.0}}
    assert render_report(result()).startswith("# Mission m-1")


def test_plain_progress_lines_have_no_ansi(capsys):
    progress = PlainProgress()
    progress.update([{"time_s": 100.0, "kind": "task", "task": "a", "status": "running", "agent": "w",
                      "attempt": 2}, {"time_s": 101.5, "kind": "mission", "status": "succeeded"}], {})
    out = capsys.readouterr().out
    assert out.splitlines() == ["[    0.0s] task a running on w (attempt 2)", "[    1.5s] mission succeeded"]
    assert "\x1b[" not in out
    assert event_line({"time_s": 5, "kind": "budget", "status": "exceeded", "message": "why"}, 0) == \
        "[    5.0s] budget exceeded - why"


def test_live_progress_shows_states_busy_agents_tokens_and_time():
    from rich.console import Console

    from controlplane.cli.progress import LiveProgress

    console = Console(record=True, force_terminal=True, width=120)
    with LiveProgress("mission m-1", console=console) as live:
        live.update([{"time_s": 1.0, "kind": "task", "task": "a", "status": "running", "agent": "w"}],
                    {"status": "running", "elapsed_s": 4.2, "tokens": 321, "llm_calls": 3,
                     "tasks": {"running": 2, "pending": 5}, "busy_agents": {"w": 1, "v": 2}})
    text = console.export_text()
    assert "mission m-1" in text and "busy agents: v x2, w" in text and "321" in text and "4.2 s" in text
    assert "task a running on w" in text
