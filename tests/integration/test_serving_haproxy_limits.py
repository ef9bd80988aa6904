"""Serve's HAProxy starts under a hard open-files limit lower than its default connection limit needs (`deploy`
lowers `RAY_SERVE_HAPROXY_MAXCONN` to fit; without that, HAProxy crashes as it starts and Serve with it)."""

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

from serving._deploy import HAPROXY_MAXCONN_ENV, haproxy_maxconn, serve_haproxy_maxconn

ROOT = Path(__file__).resolve().parents[2]
HARD_FILES_LIMIT = 6000

SCRIPT = textwrap.dedent("""
    import httpx, ray
    from controlplane.config import ServingConfig
    from serving._deploy import deploy
    from tests.helpers import free_port

    ray.init(address="local", num_cpus=4)  # a cluster of its own, started under this process's limits
    port = free_port()
    deploy(ServingConfig.model_validate({"models": {"echo": {"kind": "scripted"}}}), app_name="fd-limit",
           route_prefix="/fd-limit", http_port=port)
    reply = httpx.get(f"http://127.0.0.1:{port}/fd-limit/v1/models", timeout=30)
    print("REPLY", reply.status_code, reply.text[:200])
""")


def _lower_files_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (HARD_FILES_LIMIT, HARD_FILES_LIMIT))


def test_serve_starts_under_a_hard_files_limit_too_low_for_haproxys_default():
    assert 2.5 * serve_haproxy_maxconn() > HARD_FILES_LIMIT  # else this test would pass without the fix
    env = {key: value for key, value in os.environ.items() if key not in (HAPROXY_MAXCONN_ENV, "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, preexec_fn=_lower_files_limit,
                          capture_output=True, text=True, timeout=300)
    assert "REPLY 401" in done.stdout, done.stdout[-2000:] + done.stderr[-4000:]  # the router's own auth answer
    assert "Identity refused" in done.stdout
    assert haproxy_maxconn(serve_haproxy_maxconn(), HARD_FILES_LIMIT) == 2297
