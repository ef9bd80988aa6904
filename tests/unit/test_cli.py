"""The CLI refuses a bad spec before anything starts (unit tests refuse ray.init, so starting would fail)."""

import time
from pathlib import Path

import pytest
import ray
import yaml

from controlplane import parse_mission
from controlplane._core.user_code import check_user_code
from controlplane.cli import EXIT_USAGE, build_parser, main
from tests.helpers import mission


def test_invalid_spec_exits_2_with_the_message_and_starts_nothing(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    data = mission()
    data["tasks"][0]["agent"] = "ghost"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "bad.yaml: tasks[0](draft).agent: 'ghost' is invalid" in err and "known agents" in err
    assert not (tmp_path / "runs").exists()


def test_models_the_serving_config_lacks_and_a_missing_workspace_are_refused_at_once(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mission(agents=[{"name": "writer", "role": "w", "model": "gpt-9"},
                                                   {"name": "checker", "role": "reviewer", "model": "gpt-8"}],
                                           workspace="no-such-folder")))
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert "agents[0](writer).model: 'gpt-9' is invalid" in lines[0] and "known models: default" in lines[0]
    assert "agents[1](checker).model: 'gpt-8' is invalid" in lines[1]
    assert f"m.yaml: workspace: '{tmp_path}/no-such-folder' is invalid: no such folder" in lines[2]
    assert not (tmp_path / "runs").exists()


def test_tools_and_python_agents_whose_code_does_not_load_are_refused_at_once_before_anything_starts(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mission(
        tools=[{"name": "calc", "function": "controlplane.builtin_tools:calculater"}],
        agents=[{"name": "writer", "role": "copywriter", "tools": ["calc"]},
                {"name": "checker", "role": "reviewer", "kind": "python", "entrypoint": "no_such_module_xyz:run"}])))
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert ("m.yaml: tools[0](calc).function: 'controlplane.builtin_tools:calculater' is invalid: "
            "'controlplane.builtin_tools' has no attribute 'calculater'. Fix: did you mean 'calculator'? Else use a "
            "name it defines: calculator, list_files, read_file, word_count") in lines[0]
    assert ("m.yaml: agents[1](checker).entrypoint: 'no_such_module_xyz:run' is invalid: module "
            "'no_such_module_xyz' does not import (ModuleNotFoundError") in lines[1]
    assert not (tmp_path / "runs").exists()


def test_the_code_a_mission_names_imports_from_the_current_directory_as_on_rays_workers(tmp_path, monkeypatch):
    (tmp_path / "my_agents_mod.py").write_text("async def run(task, ctx):\n    return 'ok'\n")
    spec = parse_mission(mission(agents=[{"name": "writer", "role": "copywriter", "kind": "python",
                                          "entrypoint": "my_agents_mod:run"}, {"name": "checker", "role": "reviewer"}]))
    monkeypatch.chdir(tmp_path)
    check_user_code(spec)


@pytest.mark.parametrize(("flags", "said"), [
    (["--mission-id", "bad id!"], "argument --mission-id: 'bad id!' is not a name"),  # refused once Serve ran
    (["--runs-dir", "/proc/no-such"], "error: --runs-dir '/proc/no-such' cannot be written. Fix: give a folder "
                                      "you may write"),  # a traceback once Serve ran
    (["--state-uri", "nofs://bucket/runs"], "error: --state-uri 'nofs://bucket/runs' names a filesystem fsspec "
                                            "cannot open here: Protocol not known: nofs. Fix: install"),
    (["--state-uri", "memory://runs"], "error: --state-uri 'memory://runs' is fsspec's in-process memory: the "
                                       "supervisor would keep the mission's log in its own process"),  # "wrote" it
])
def test_a_run_directory_it_cannot_write_or_a_bad_mission_id_is_refused_before_anything_starts(
        tmp_path, capsys, flags, said):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mission()))
    try:
        code = main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), *flags])
    except SystemExit as exited:  # argparse's usage error
        code = exited.code
    assert code == EXIT_USAGE and said in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_trace_sampler_it_cannot_apply_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mission()))
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "ten percent")
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == EXIT_USAGE  # ray.init would raise
    assert "OTEL_TRACES_SAMPLER_ARG='ten percent' is not a share of traces" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_address_where_no_cluster_answers_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    from tests.helpers import free_port

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mission()))
    nobody = f"127.0.0.1:{free_port()}"
    assert main(["run", str(path), "--address", nobody, "--runs-dir", str(tmp_path / "runs")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"no Ray cluster answers at '{nobody}' (from --address)" in err and "Fix: give the head node's" in err
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # set for `ray job submit`
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "(from $RAY_ADDRESS) is a dashboard's address" in err and "ray job submit --address" in err
    assert not (tmp_path / "runs").exists()
    monkeypatch.delenv("RAY_ADDRESS")

    def no_cluster_here(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")  # what ray.init("auto") says then

    monkeypatch.setattr(ray, "init", no_cluster_here)
    assert main(["run", str(path), "--address", "auto", "--runs-dir", str(tmp_path / "runs")]) == EXIT_USAGE
    assert "'auto' (from --address) finds no Ray cluster started on this machine. Fix: start one with `ray start " \
        "--head`" in capsys.readouterr().err  # was ray.init's ConnectionError traceback
    runs = ["--runs-dir", str(tmp_path / "runs")]
    for command in (["status", "m-1", *runs], ["cancel", "m-1", *runs], ["approvals", "m-1", *runs], ["stop", "--all"]):
        assert main([*command, "--address", nobody]) == EXIT_USAGE, command
        assert f"no Ray cluster answers at '{nobody}'" in capsys.readouterr().err


def test_bad_memory_settings_are_refused(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mission(memory={"exact_below": 0})))
    assert main(["run", str(path)]) == EXIT_USAGE
    assert "memory.exact_below" in capsys.readouterr().err


def test_subcommands_and_options():
    args = build_parser().parse_args(["run", "m.yaml", "--address", "auto", "--runs-dir", "/tmp/r", "--plain"])
    assert (args.command, args.address, args.runs_dir, args.plain) == ("run", "auto", "/tmp/r", True)
    assert build_parser().parse_args(["status", "m-1", "--json"]).json
    with pytest.raises(SystemExit):
        build_parser().parse_args(["explode"])


@pytest.mark.parametrize("port", ["99999", "0", "-1", "eighty"])
def test_an_http_port_that_is_no_tcp_port_is_a_usage_error_before_anything_starts(port, capsys):
    for command in ("run", "resume"):
        with pytest.raises(SystemExit) as usage:
            build_parser().parse_args([command, "x", "--http-port", port])
        assert usage.value.code == EXIT_USAGE
        assert f"argument --http-port: '{port}' is not a TCP port: give a whole number from 1 to 65535" \
            in capsys.readouterr().err
    assert build_parser().parse_args(["run", "x", "--http-port", "8001"]).http_port == 8001


def test_ctrl_c_outside_a_running_mission_stops_the_command_without_a_traceback(monkeypatch, capsys):
    from controlplane.cli import missions

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(missions, "status_command", interrupted)  # as `status --watch` is, when Ctrl-C comes
    assert main(["status", "m-1", "--watch"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_status_and_cancel_of_an_ended_mission_use_its_record_without_a_cluster(tmp_path, capsys):
    import json

    folder = tmp_path / "m-9"
    folder.mkdir()
    (folder / "ray_address").write_text("127.0.0.1:9\n")  # that cluster is gone: nothing listens there
    (folder / "result.json").write_text(json.dumps({
        "mission_id": "m-9", "status": "cancelled", "reason": "by user", "wall_s": 2.0,
        "usage": {"tokens": 3, "llm_calls": 1}, "tasks": [{"status": "cancelled"}]}))
    assert main(["status", "m-9", "--runs-dir", str(tmp_path)]) == 0
    assert "m-9: cancelled (by user)" in capsys.readouterr().out
    assert main(["cancel", "m-9", "--runs-dir", str(tmp_path)]) == 0
    assert "already ended: cancelled" in capsys.readouterr().out
    (folder / "result.json").write_text(json.dumps({  # one that failed as it started
        "mission_id": "m-9", "status": "failed", "reason": "SpecError: ...", "wall_s": 1.0,
        "usage": {"tokens": 0, "llm_calls": 0}, "tasks": []}))
    assert main(["status", "m-9", "--runs-dir", str(tmp_path)]) == 0
    assert "tasks: none ran\n" in capsys.readouterr().out  # not "no tasks yet"


def test_keys_create_list_revoke_keeps_only_hashes_and_prints_the_key_once(tmp_path, capsys):
    keys_file = str(tmp_path / "keys.json")
    assert main(["keys", "--keys-file", keys_file, "create", "ci", "--mission", "launch", "--agent", "writer",
                 "--rpm", "60"]) == 0
    clear_key = capsys.readouterr().out.splitlines()[0]
    assert clear_key.startswith("cp-") and clear_key not in (tmp_path / "keys.json").read_text()
    assert main(["keys", "--keys-file", keys_file, "list"]) == 0
    listed = capsys.readouterr().out
    assert "ci  active  mission launch  agents writer  priority <= normal  rpm 60" in listed and clear_key not in listed
    key_id = listed.split()[0]
    assert main(["keys", "--keys-file", keys_file, "revoke", key_id]) == 0
    assert f"{key_id}  ci  revoked" in capsys.readouterr().out
    assert main(["keys", "--keys-file", keys_file, "revoke", "nope"]) == EXIT_USAGE
    assert "no key has this id" in capsys.readouterr().err
    assert main(["keys", "--keys-file", keys_file, "create", "x", "--mission", "m", "--agent", "supervisor"]) == 2
    assert "reserved" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "said"), [
    (["--expires-in-s", "-5"], "argument --expires-in-s: '-5' is not a number above 0"),  # a key born expired
    (["--rpm", "0"], "argument --rpm: '0' is not a number above 0"),
    (["--tpm", "many"], "argument --tpm: 'many' is not a number above 0: give one such as 100000"),
    (["--agent", "a b"], "argument --agent: 'a b' is not a name: use letters, digits"),
])
def test_keys_create_refuses_a_bad_flag_naming_it_and_writes_no_key(tmp_path, capsys, flags, said):
    keys_file = tmp_path / "keys.json"
    with pytest.raises(SystemExit) as exited:
        main(["keys", "--keys-file", str(keys_file), "create", "ci", "--mission", "launch", *flags])
    assert exited.value.code == EXIT_USAGE and said in capsys.readouterr().err
    assert not keys_file.exists()


def test_a_missions_key_that_a_killed_driver_left_active_is_revoked_when_the_next_driver_makes_its_own(tmp_path):
    from controlplane.cli.run import mission_api_key
    from serving._keys import ApiKeyStore

    keys, runs = str(tmp_path / "keys.json"), str(tmp_path / "runs")
    _, left_id, _ = mission_api_key(keys, runs, "m-1", None)  # its driver was killed before it could revoke it
    _, new_id, path = mission_api_key(keys, runs, "m-1", None)
    scopes = {scope.id: scope for scope in ApiKeyStore(keys).list()}
    assert scopes[left_id].revoked_at_s is not None and scopes[new_id].revoked_at_s is None
    assert ApiKeyStore(keys).lookup(Path(path).read_text().strip(), now_s=time.time()).id == new_id
