"""benchmarks/_serving_load.py's SpreadHttpLoad: clients split over processes still make every request once, and the
level's figures cover all of them."""

import asyncio
import concurrent.futures
import http.server
import json
import multiprocessing
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
