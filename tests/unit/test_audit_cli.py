"""`controlplane wait|result|logs|audit` read a run directory without Ray; `audit verify` catches tampering. The
commands that act on a mission refuse an ended one from its run directory, before anything starts."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from actors._durable import Start, open_mission
from controlplane import parse_mission
from controlplane._rundir import write_run_dir
from controlplane.cli import EXIT_FAILED, EXIT_OK
from controlplane.cli._codes import EXIT_BROKEN_PIPE
from controlplane.cli.main import main
from tests.helpers import mission


def write_mission(run, *, finish=True, spec=None):
    opened = open_mission(str(run))
    assert opened.start == Start.FRESH
    writer = opened.writer
    writer.append("mission.start", {"mission_id": "m-1", "name": "m", "spec": spec or {}, "format": 1}, time_s=1.0)
    writer.append("task.dispatch", {"task": "a", "agent": "w", "attempt": 1, "attempt_key": "m-1/a/1"}, time_s=2.0)
    writer.append("task.succeeded", {"task": "a", "agent": "w", "attempt": 1, "attempt_key": "m-1/a/1",
                                     "output": "done"}, time_s=3.0)
    writer.append("budget.charge", {"agent": "w", "tokens": 12}, time_s=3.0)
    if finish:
        writer.append("mission.status", {"status": "succeeded"}, time_s=4.0)
        writer.flush()
        result = {"mission_id": "m-1", "goal": "g", "status": "succeeded", "reason": "", "wall_s": 3.0,
                  "tasks": [], "usage": {"tokens": 12, "llm_calls": 1}, "control_plane": {"tokens": 0, "llm_calls": 0},
                  "log_head": writer.head.to_dict()}
        write_run_dir(str(run), result, [])
    writer.close()


def test_audit_verify_passes_a_whole_log_and_names_the_first_edited_record(tmp_path, capsys):
    run = tmp_path / "m-1"
    write_mission(run)
    assert main(["audit", "verify", str(run)]) == 0
    assert "ok:" in capsys.readouterr().out
    segment = next((run / "log").glob("*.jsonl"))
    lines = segment.read_text().splitlines()
    lines[2] = lines[2].replace('"done"', '"forged"')
    segment.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", str(run)]) == 1
    assert "record 2" in capsys.readouterr().out


def test_audit_verify_catches_a_truncated_log_against_the_head_in_result_json(tmp_path, capsys):
    run = tmp_path / "m-1"
    write_mission(run)
    segment = next((run / "log").glob("*.jsonl"))
    segment.write_text("\n".join(segment.read_text().splitlines()[:3]) + "\n")
    (run / "log.head").unlink()
    assert main(["audit", "verify", str(run)]) == 1
    assert "bad:" in capsys.readouterr().out


def test_audit_show_filters_by_kind_and_agent(tmp_path, capsys):
    run = tmp_path / "m-1"
    write_mission(run)
    assert main(["audit", "show", str(run), "--kind", "task", "--json"]) == 0
    kinds = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["task.dispatch", "task.succeeded"]
    assert main(["audit", "show", "m-1", "--runs-dir", str(tmp_path), "--kind", "budget.charge", "--agent", "w"]) == 0
    assert "budget.charge" in capsys.readouterr().out


def test_audit_show_that_matches_nothing_names_the_kinds_and_agents_the_log_holds(tmp_path, capsys):
    write_mission(tmp_path / "m-1")
    assert main(["audit", "show", "m-1", "--runs-dir", str(tmp_path), "--kind", "tasks"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == "" and ("no record matches; the kinds in this log: budget.charge, mission.start, mission.status, "
                          "task.dispatch, task.succeeded; its agents: supervisor, w") in err


def test_wait_result_and_logs_read_storage(tmp_path, capsys):
    run = tmp_path / "m-1"
    write_mission(run)
    assert main(["wait", str(run), "--timeout-s", "1"]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert main(["result", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["log_head"]["seq"] == 4
    assert main(["logs", str(run), "--follow"]) == 0  # returns at the final status
    assert capsys.readouterr().out.count("\n") == 5


def test_an_unfinished_mission_is_resumed_and_a_finished_one_served(tmp_path, capsys):
    unfinished, finished = tmp_path / "u", tmp_path / "f"
    write_mission(unfinished, finish=False)
    write_mission(finished)
    opened = open_mission(str(unfinished))
    assert opened.start == Start.RESUME and list(opened.state.completed()) == ["a"]
    opened.writer.close()
    assert main(["wait", str(unfinished), "--timeout-s", "0.1"]) == 1
    assert main(["result", str(unfinished)]) == 1
    capsys.readouterr()
    assert main(["report", str(unfinished)]) == 1  # was "No mission ... is running or recorded"
    assert "has not ended, and its report is written when it does" in capsys.readouterr().err
    opened = open_mission(str(finished))
    assert opened.start == Start.FINISHED and opened.result["status"] == "succeeded"
    opened.writer.close()


@pytest.mark.parametrize("command", [["wait", "--timeout-s", "5"], ["result"], ["status"], ["status", "--watch"],
                                     ["cancel"], ["report"], ["logs", "--follow"], ["approvals"]])
def test_a_mission_whose_cluster_is_gone_before_its_end_is_said_to_have_stopped_with_resume_as_the_fix(
        tmp_path, capsys, command):
    """`wait` waited for ever on it, `result` said `wait` would block until it ended, and the others said no such
    mission was running or recorded."""
    from tests.helpers import free_port

    write_mission(tmp_path / "m-1", finish=False)
    (tmp_path / "m-1" / "ray_address").write_text(f"127.0.0.1:{free_port()}\n")  # a local Ray that was killed
    assert main([command[0], "m-1", "--runs-dir", str(tmp_path), *command[1:]]) == EXIT_FAILED
    assert (f"The mission in {tmp_path}/m-1 stopped before its end: the Ray cluster it ran on, on this machine "
            "(127.0.0.1:" in capsys.readouterr().err)
    assert main(["wait", "m-1", "--runs-dir", str(tmp_path), "--timeout-s", "5"]) == EXIT_FAILED
    assert f"is gone. Fix: continue it with `controlplane resume {tmp_path}/m-1`" in capsys.readouterr().err


def test_a_mission_on_a_cluster_elsewhere_that_does_not_answer_from_here_is_waited_for(tmp_path, capsys):
    """From a laptop that shares the runs directory, a cluster's private address may not answer while the cluster
    runs the mission: `resume` there would run it twice."""
    write_mission(tmp_path / "m-1", finish=False)
    (tmp_path / "m-1" / "ray_address").write_text("203.0.113.7:6379\n")  # TEST-NET-3: not this machine
    assert main(["wait", "m-1", "--runs-dir", str(tmp_path), "--timeout-s", "0.5"]) == EXIT_FAILED
    assert "has not ended after 0.5 s" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "resume", "resume by id"])
def test_a_run_or_resume_of_a_mission_that_ended_is_refused_before_anything_starts(tmp_path, capsys, command):
    """Both started Ray and Serve and made the mission's API key before the refusal (unit tests refuse ray.init)."""
    write_mission(tmp_path / "m-1", spec=mission())
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mission()))
    argv = {"run": ["run", str(path), "--mission-id", "m-1", "--runs-dir", str(tmp_path)],
            "resume": ["resume", str(tmp_path / "m-1"), "--runs-dir", str(tmp_path)],
            "resume by id": ["resume", "m-1", "--runs-dir", str(tmp_path)]}[command]
    assert main(argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Mission id 'm-1' cannot be used: the mission in" in err
    assert ("--mission-id" in err) == (command == "run")  # resume has no such option
    assert not (tmp_path / "m-1" / "api_key").exists()


def test_a_resume_of_what_is_no_run_directory_nor_mission_id_names_the_unfinished_missions(tmp_path, capsys):
    write_mission(tmp_path / "m-1", spec=mission())
    write_mission(tmp_path / "m-2", spec=mission(), finish=False)
    assert main(["resume", "m-3", "--runs-dir", str(tmp_path)]) != EXIT_OK
    assert (f"resume: 'm-3' is invalid: it is neither a run directory with a mission log nor the id of a mission "
            f"under {tmp_path}. Fix: pass a mission's run directory, or its id with --runs-dir DIR; unfinished "
            f"missions under {tmp_path}: m-2") in capsys.readouterr().err


def test_approvals_of_a_mission_that_ended_say_so_from_its_record_without_a_cluster(tmp_path, capsys):
    write_mission(tmp_path / "m-1")
    assert main(["approvals", "m-1", "--runs-dir", str(tmp_path)]) == EXIT_OK
    assert "mission m-1 ended (succeeded): nothing waits for approval" in capsys.readouterr().out
    assert main(["approve", "m-1", "a-1", "--runs-dir", str(tmp_path)]) == EXIT_FAILED
    assert "mission m-1 ended (succeeded); what waited for approval was denied as it ended" in capsys.readouterr().err


@pytest.mark.parametrize("mission_id", ["bad id!", "team/q3", ""])
def test_start_mission_refuses_a_mission_id_that_is_not_a_name_before_it_looks_at_the_cluster(mission_id):
    from actors import start_mission
    from controlplane.errors import SpecError

    with pytest.raises(SpecError, match="it names the supervisor actor, the run directory and the mission's keys"):
        start_mission(parse_mission(mission()), router=None, mission_id=mission_id)


def test_start_mission_refuses_a_tool_whose_function_does_not_load_before_it_looks_at_the_cluster():
    from actors import start_mission
    from controlplane.errors import SpecError

    spec = parse_mission(mission(tools=[{"name": "calc", "function": "controlplane.builtin_tools:calculater"}],
                                 agents=[{"name": "writer", "role": "copywriter", "tools": ["calc"]},
                                         {"name": "checker", "role": "reviewer"}]))
    with pytest.raises(SpecError, match=r"tools\[0\]\(calc\).function: .* did you mean 'calculator'"):
        start_mission(spec, router=None)


def test_start_mission_refuses_a_spec_or_router_of_another_type_and_a_process_without_ray_before_anything_starts(
        monkeypatch):
    import ray

    from actors import start_mission
    from controlplane.errors import SetupError
    from serving import RouterClient

    with pytest.raises(TypeError, match=r"spec of type dict is not a MissionSpec. Fix: pass "
                                        r"controlplane.parse_mission\(dict\)"):
        start_mission(mission(), router=RouterClient())  # was AttributeError: 'dict' object has no attribute 'tools'
    with pytest.raises(TypeError, match=r"router=None is not a router's client.*Fix: pass what serving.deploy"):
        start_mission(parse_mission(mission()), router=None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(SetupError, match=r"Ray is not started in this process. Fix: call ray.init\(\) first"):
        start_mission(parse_mission(mission()), router=RouterClient())


@pytest.mark.parametrize("call", ["approvals", "approve", "deny", "follow", "find_supervisor", "stop_all",
                                  "running_missions"])
def test_a_mission_looked_up_from_a_process_without_ray_is_a_setup_error_not_a_new_empty_ray(monkeypatch, call):
    """Ray's auto-init would start a local Ray of its own, then say that no such mission runs."""
    import ray

    import actors
    from controlplane.errors import SetupError

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    arguments = {"approve": ("m-1", "ap-1"), "deny": ("m-1", "ap-1"), "stop_all": (), "running_missions": ()}
    with pytest.raises(SetupError, match=r"Ray is not started in this process. Fix: call ray.init\(\) first"):
        getattr(actors, call)(*arguments.get(call, ("m-1",)))


@pytest.mark.parametrize("damage", ["{\"mission_id\": \"m-1\", \"stat", "[1, 2]", "{\"mission_id\": \"m-1\"}"])
@pytest.mark.parametrize("command", [["result"], ["wait"], ["status"], ["report"], ["status", "--watch"]])
def test_a_damaged_result_json_is_named_with_the_fix_and_audit_verify_still_checks_the_log(
        tmp_path, capsys, damage, command):
    write_mission(tmp_path / "m-1")
    (tmp_path / "m-1" / "result.json").write_text(damage)
    assert main([command[0], "m-1", "--runs-dir", str(tmp_path), *command[1:]]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"{tmp_path}/m-1/result.json cannot be read" in err
    assert f"controlplane audit verify {tmp_path}/m-1" in err and "Traceback" not in err
    assert main(["audit", "verify", "m-1", "--runs-dir", str(tmp_path)]) == EXIT_OK
    assert "checked without the head it records" in capsys.readouterr().err


def test_a_damaged_events_line_is_named_by_its_number(tmp_path, capsys):
    write_mission(tmp_path / "m-1")
    (tmp_path / "m-1" / "events.jsonl").write_text('{"kind": "task.running"}\nnot json\n')
    assert main(["status", "m-1", "--runs-dir", str(tmp_path), "--watch"]) == EXIT_FAILED
    assert "events.jsonl cannot be read: it is not JSON (line 2, " in capsys.readouterr().err


@pytest.mark.parametrize("command", ["logs", "result"])
def test_a_reader_of_the_output_that_went_away_ends_the_command_with_141_and_no_traceback(tmp_path, command):
    """`controlplane logs m | head`: the pipe's reader is gone before the first line. 141 is 128 + SIGPIPE."""
    run = tmp_path / "m-1"
    write_mission(run)
    reader, writer = os.pipe()
    os.close(reader)
    with os.fdopen(writer, "w") as stdout:
        done = subprocess.run([sys.executable, "-m", "controlplane", command, str(run)], stdout=stdout,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, "")
