"""The router app also runs from a Serve config file with Ray's own `serve run`, as Ray users expect."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.helpers import wait_for


def test_serve_run_from_a_config_file(router, router_base_url, api_key, tmp_path):
    import ray
    from ray import serve

    serving_yaml = tmp_path / "serving.yaml"
    serving_yaml.write_text(yaml.safe_dump({"models": {"echo": {"kind": "scripted",
                                                                 "replies": [{"match": "ping", "text": "pong"}]}}}))
    serve_yaml = tmp_path / "serve_config.yaml"
    serve_yaml.write_text(yaml.safe_dump({"applications": [{
        "name": "serve-run-test", "route_prefix": "/serve-run", "import_path": "serving:app_builder",
        "args": {"config": str(serving_yaml)}}]}))
    serve_cli = Path(sys.executable).with_name("serve")
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    address = ray.get_runtime_context().gcs_address
    try:
        subprocess.run([str(serve_cli), "run", "--non-blocking", "--address", address, str(serve_yaml)],
                       check=True, env=env, timeout=300, capture_output=True)
        url = router_base_url.replace("/v1", "/serve-run/v1/chat/completions")
        headers = {"authorization": f"Bearer {api_key('it-serve-run', mission='it-serve-run')}"}
        reply = wait_for(lambda: _try_post(url, headers), timeout_s=60, what="the serve-run app")
        assert reply["choices"][0]["message"]["content"] == "pong"
    finally:
        serve.delete("serve-run-test")


def _try_post(url: str, headers: dict[str, str]):
    body = {"model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "ping"}]}
    response = httpx.post(url, json=body, headers=headers, timeout=10)
    if response.status_code in (404, 503):  # the app is not routed yet
        return None
    assert response.status_code == 200, response.text
    return response.json()
