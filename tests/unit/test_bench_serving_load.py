"""benchmarks/_serving_load.py: SpreadHttpLoad's clients, split over processes, still make every request once, and the
level's figures cover all of them; a benchmark stopped by SIGTERM still runs its cleanup."""

import asyncio
import concurrent.futures
import http.server
import json
import multiprocessing
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._serving_load import SpreadHttpLoad  # noqa: E402

TOKENS = 5


class _StreamingChat(http.server.BaseHTTPRequestHandler):
    """An OpenAI-style streaming chat endpoint: TOKENS one-word chunks, then the usage, then [DONE]."""

    requests: list[str] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.requests.append(body["messages"][-1]["content"])
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for _ in range(TOKENS):
            self.wfile.write(b'data: {"choices": [{"delta": {"content": "w "}}]}\n\n')
        usage = {"choices": [], "usage": {"completion_tokens": TOKENS}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args) -> None:
        pass


def test_a_spread_load_makes_every_clients_requests_once_across_its_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_ROOT_SECRET_FILE", str(tmp_path / "root_secret"))  # the clients' bearer tokens
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StreamingChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spawn = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(3, mp_context=spawn) as pool:
            load = SpreadHttpLoad(f"http://127.0.0.1:{server.server_port}/v1", "m", pool, 3)
            figures = asyncio.run(load.level(concurrency=7, per_client=2, max_tokens=TOKENS))
    finally:
        server.shutdown()
    assert figures["requests"] == 14 and len(_StreamingChat.requests) == 14
    assert figures["tokens_per_request"] == TOKENS and figures["tok_s"] > 0
    assert figures["ttft_p50_ms"] <= figures["ttft_p99_ms"]


def test_a_benchmark_stopped_by_sigterm_runs_its_cleanup(tmp_path):
    """`timeout` stops a GPU run with SIGTERM; vllm_server's process group, started in its own session, must still
    be stopped by its context manager (a survivor held the GPU's memory in the 2026-12-04 run)."""
    marker = tmp_path / "cleaned"
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
              "from benchmarks._serving_load import exit_on_sigterm\n"
              "exit_on_sigterm()\n"
              "try:\n    print('ready', flush=True)\n    time.sleep(60)\n"
              f"finally:\n    open({str(marker)!r}, 'w').write('yes')\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 128 + signal.SIGTERM  # the child imports Ray Serve; its exit once took over 30 s in CI
    assert marker.read_text() == "yes"
