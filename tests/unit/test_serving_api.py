"""The router client pickles by app name, so actors can carry it."""

import os

import serving


def test_router_client_pickles_by_app_name():
    import pickle

    client = pickle.loads(pickle.dumps(serving.RouterClient("my-app")))
    assert client.app_name == "my-app"


def test_a_remote_backends_api_key_never_travels_in_the_routers_runtime_env(monkeypatch, tmp_path):
    from controlplane.config import ServingConfig
    from serving._secrets import ROOT_SECRET_ENV

    monkeypatch.setenv("CP_UNIT_REMOTE_KEY", "sk-do-not-ship")
    monkeypatch.setenv(ROOT_SECRET_ENV, str(tmp_path / "root_secret"))
    config = ServingConfig.model_validate({"models": {"gpt": {
        "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "remote_model": "x",
        "api_key_env": "CP_UNIT_REMOTE_KEY"}}})
    app = serving.build_app(config)
    env = app._bound_deployment.ray_actor_options["runtime_env"]["env_vars"]
    assert "sk-do-not-ship" not in repr(app._bound_deployment.init_args) + repr(env)
    assert env[ROOT_SECRET_ENV] == str(tmp_path / "root_secret")  # paths travel, secrets do not
    assert "CP_UNIT_REMOTE_KEY" not in env


def test_building_a_vllm_app_leaves_the_callers_console_logging_as_it_was(tmp_path):
    """ray.serve.llm's first import swaps the root logger's handlers for JSON lines; `controlplane run` printed
    its own messages, and vLLM's lines as it loads, as JSON until the swap was undone."""
    import subprocess
    import sys

    script = """
import logging, sys
logging.basicConfig(stream=sys.stdout, format="plain %(name)s: %(message)s", level=logging.INFO)
import os

import serving
from controlplane.config import ServingConfig
serving.build_app(ServingConfig.model_validate({"models": {"default": {"kind": "vllm", "model_path": "/m"}}}))
logging.getLogger("controlplane.check").info("after the build")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CONTROLPLANE_ROOT_SECRET_FILE": str(tmp_path / "secret")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "plain controlplane.check: after the build" in done.stdout.splitlines()
    output = (done.stdout + done.stderr).splitlines()
    assert not [line for line in output if line.startswith("{")]  # vLLM's own lines as it loads are plain too
