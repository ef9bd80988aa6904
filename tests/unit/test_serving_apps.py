"""A mission with another serving config never redeploys the app under a running mission."""

import pytest

from controlplane import SetupError, SpecError
from serving._apps import choose_app, config_app_name

A, B = {"models": {"a": {"kind": "scripted"}}}, {"models": {"b": {"kind": "scripted"}}}


def test_first_deploy_then_reuse_of_the_same_config():
    assert choose_app("controlplane", A, {}, missions_running=0).action == "deploy"
    assert choose_app("controlplane", A, {"controlplane": A}, missions_running=3).action == "reuse"


def test_another_config_replaces_an_idle_app():
    choice = choose_app("controlplane", B, {"controlplane": A}, missions_running=0)
    assert (choice.name, choice.action) == ("controlplane", "redeploy")


def test_another_config_under_a_running_mission_joins_as_a_separate_app_named_by_its_hash():
    choice = choose_app("controlplane", B, {"controlplane": A}, missions_running=1)
    assert choice.action == "deploy" and choice.name == config_app_name("controlplane", B) != "controlplane"
    assert choice.name == config_app_name("controlplane", dict(reversed(list(B.items()))))  # order-free
    again = choose_app("controlplane", B, {"controlplane": A, choice.name: B}, missions_running=2)
    assert (again.name, again.action) == (choice.name, "reuse")


def test_or_is_refused_with_the_reason():
    with pytest.raises(SpecError, match="runs another serving config under 1 running mission"):
        choose_app("controlplane", B, {"controlplane": A}, missions_running=1, on_conflict="refuse")


def test_haproxy_takes_its_default_port_when_free_and_the_next_free_one_when_it_is_taken():
    import socket

    from serving._deploy import _port_or_free

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _port_or_free(port) > port
    assert _port_or_free(port) == port


def test_serve_starts_in_its_high_throughput_mode_unless_the_callers_environment_opts_out(monkeypatch):
    from ray import serve

    from serving import _deploy

    started: list[dict] = []
    monkeypatch.setattr(serve, "start", lambda **options: started.append(options))
    monkeypatch.setattr(_deploy, "stop_orphaned_haproxies", lambda: [])
    monkeypatch.setattr(_deploy, "serve_http_port", lambda: None)  # the integration tests' Serve may run
    mode = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")
    for name in mode:
        monkeypatch.delenv(name, raising=False)
    _deploy.start_serve()
    for name in mode:
        monkeypatch.setenv(name, "0")
    _deploy.start_serve()
    on, off = (options["controller_options"]["runtime_env"]["env_vars"] for options in started)
    assert {name: on[name] for name in mode} == dict.fromkeys(mode, "1")
    assert {name: off[name] for name in mode} == dict.fromkeys(mode, "0")


def test_a_running_serve_is_left_with_its_options(monkeypatch):
    from ray import serve

    from serving import _deploy

    started: list[dict] = []
    monkeypatch.setattr(serve, "start", lambda **options: started.append(options))
    monkeypatch.setattr(_deploy, "stop_orphaned_haproxies", lambda: started.append({"stopped": True}) or [])
    monkeypatch.setattr(_deploy, "serve_http_port", lambda: 8123)
    _deploy.start_serve(http_port=8000)
    assert started == []


def test_a_port_held_by_another_process_is_a_setup_error_before_ray_starts_and_when_serves_proxy_cannot_bind(
        monkeypatch):
    import socket
    import threading

    from ray import serve

    from serving import _deploy

    monkeypatch.setattr(_deploy, "stop_orphaned_haproxies", lambda: [])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(SetupError, match=f"Serve's HTTP port {port} on 127.0.0.1 is in use by another process"):
            _deploy.check_http_port_free("127.0.0.1", port)
    _deploy.check_http_port_free("127.0.0.1", port)  # free again: no error

    orphan = socket.socket()  # the HAProxy a killed Serve left: stopped, and its port waited for
    orphan.bind(("127.0.0.1", port))
    orphan.listen()
    monkeypatch.setattr(_deploy, "stop_orphaned_haproxies",
                        lambda: threading.Timer(0.3, orphan.close).start() or [4242])
    _deploy.check_http_port_free("127.0.0.1", port, release_s=5.0)

    def bind_fails(**options):  # a cluster joined with --address: the port is held on its head
        raise RuntimeError(f"Failed to bind to address 127.0.0.1:{port}: address already in use")

    shut: list[bool] = []
    monkeypatch.setattr(serve, "start", bind_fails)
    monkeypatch.setattr(serve, "shutdown", lambda: shut.append(True))
    monkeypatch.setattr(_deploy, "serve_http_port", lambda: None)
    with pytest.raises(SetupError, match=f"port {port} on 127.0.0.1 is in use.*--http-port {port + 1}"):
        _deploy.start_serve(http_port=port)
    assert shut == [True]  # no Serve is left holding the port in its options


def test_serves_notice_that_options_it_was_not_given_are_not_applied_is_left_out_while_deploy_runs_serve_run():
    import logging

    from serving._deploy import SERVE_JOIN_NOTICE, serve_join_notice_dropped

    serve_logger, seen = logging.getLogger("ray.serve"), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    serve_logger.addHandler(handler)
    notice = f'{SERVE_JOIN_NOTICE} in namespace "serve". New http_options/controller_options will not be applied.'
    try:
        with serve_join_notice_dropped():
            serve_logger.warning(notice)
            serve_logger.warning("Application 'a' is ready")
        serve_logger.warning(notice)
    finally:
        serve_logger.removeHandler(handler)
    assert seen == ["Application 'a' is ready", notice]


def test_haproxy_gets_a_connection_limit_that_fits_the_hard_files_limit_unless_the_caller_set_one(monkeypatch):
    import resource

    from ray import serve

    from serving import _deploy

    started: list[dict] = []
    monkeypatch.setattr(serve, "start", lambda **options: started.append(options))
    monkeypatch.setattr(_deploy, "stop_orphaned_haproxies", lambda: [])
    monkeypatch.setattr(_deploy, "serve_http_port", lambda: None)  # the integration tests' Serve may run
    monkeypatch.setattr(_deploy, "serve_haproxy_maxconn", lambda: 20000)  # Ray 2.58's default
    monkeypatch.setattr(resource, "getrlimit", lambda _: (20000, 20000))
    monkeypatch.delenv(_deploy.HAPROXY_MAXCONN_ENV, raising=False)
    _deploy.start_serve()
    monkeypatch.setenv(_deploy.HAPROXY_MAXCONN_ENV, "1000")
    _deploy.start_serve()
    fitted, callers = (options["controller_options"]["runtime_env"]["env_vars"][_deploy.HAPROXY_MAXCONN_ENV]
                       for options in started)
    assert fitted == "7897"  # (20,000 - 256) / 2.5: HAProxy asks for 2.5 files per connection as it starts
    assert callers == "1000"
    assert _deploy.haproxy_maxconn(4096, resource.RLIM_INFINITY) == 4096
    assert _deploy.haproxy_maxconn(4096, 1 << 20) == 4096  # never raised above Serve's own default


def test_a_failed_deploy_names_each_failed_deployment_by_its_model_and_the_last_line_of_its_error():
    from types import SimpleNamespace

    from serving._deploy import deploy_failure

    def deployment(status: str, message: str) -> SimpleNamespace:
        return SimpleNamespace(status=status, message=message)

    status = SimpleNamespace(message="Failed to update the deployments", deployments={
        "vllm:default": deployment("DEPLOY_FAILED", "Traceback ...\n  File x\nOSError: no config.json in /m.\n"),
        "Router": deployment("DEPLOY_FAILED", "ValueError: bad"),
        "scripted:judge": deployment("HEALTHY", "")})
    what = deploy_failure("controlplane", status).what
    assert what == ("the serving app 'controlplane' did not start: Router: ValueError: bad; models.default "
                    "(vllm:default): OSError: no config.json in /m")
    assert deploy_failure("x", None).what == "the serving app 'x' did not start: Serve gave no reason"


def test_a_failed_deploy_whose_replica_said_what_to_do_gives_that_fix_not_the_models_one():
    from types import SimpleNamespace

    from serving._deploy import deploy_failure

    refusal = "SetupError: the limiter runs other code. Fix: deploy it with controlplane."
    status = SimpleNamespace(message="", deployments={"Router": SimpleNamespace(status="DEPLOY_FAILED",
                                                                                message=f"Traceback\n{refusal}\n")})
    failure = deploy_failure("controlplane", status)
    assert failure.what == f"the serving app 'controlplane' did not start: Router: {refusal.rstrip('.')}"
    assert "model" not in failure.fix and "traceback" in failure.fix


def test_deploy_of_a_path_where_a_config_belongs_is_a_type_error_with_the_fix_before_ray_starts():
    from serving import deploy

    with pytest.raises(TypeError, match=r"config='serving/default.yaml' is not a ServingConfig. Fix: pass "
                                        r"load_serving_config\(path\)"):
        deploy("serving/default.yaml")  # was AttributeError: 'str' object has no attribute 'check_env'


def test_load_serving_config_of_a_dict_where_a_path_belongs_is_a_type_error_with_the_fix():
    from serving import load_serving_config

    with pytest.raises(TypeError, match=r"path of type dict is not a file's path. Fix: pass the path of a serving "
                                        r"YAML file, or None for serving/default.yaml"):
        load_serving_config({"models": []})  # was: expected str, bytes or os.PathLike object, not dict
