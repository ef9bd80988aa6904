"""The docs' Python examples that need Ray, Serve or vLLM run as written, on the session cluster and router.

They are the blocks marked `<!-- test: integration -->` in README.md and docs/*.md. Three substitutions
let them share the session's cluster and Serve app: `ray.init` joins the running cluster, `serving.deploy`
returns the session router (whose models include `default`, `scripted` and `scripted-slow`), and
`http://127.0.0.1:8000` becomes the router's URL. `$CONTROLPLANE_API_KEY` holds a key of mission `launch`
(agent `writer`), as `controlplane keys create` would make it. A block's `id=` names its check below. Each block runs in
a fresh directory with `missions/` linked in, and the named actors it leaves behind are killed.

(This file is not named test_docs_examples.py: pytest cannot collect two test modules of one basename
without packages, and tests/unit has that one.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

import serving
from tests.helpers import wait_for
from tests.helpers.doc_blocks import link_missions, python_blocks, run_block

BLOCKS = python_blocks("integration")
LOCAL_URL = "http://127.0.0.1:8000"
MAY = "The launch is planned for May."


def check_openai(scope: dict[str, Any], tmp_path: Path) -> None:
    reply = scope["reply"]
    assert reply.model == "default" and reply.choices[0].message.content.strip()
    assert 0 < reply.usage.completion_tokens <= 16


def check_readme_memory(scope: dict[str, Any], tmp_path: Path) -> None:
    assert scope["hits"][0][0].entry.text == MAY
    assert (tmp_path / "runs/demo/memory").is_dir()


def check_readme_mission(scope: dict[str, Any], tmp_path: Path) -> None:
    result = scope["result"]
    assert result["status"] == "succeeded", result["reason"]
    assert [t["id"] for t in result["tasks"]] == ["plan", "research", "copy", "edit"]


def check_serving_handle(scope: dict[str, Any], tmp_path: Path) -> None:
    result = scope["result"]
    assert result.backend == "vllm" and result.model == "default" and result.text.strip()
    assert 0 < result.ttft_s <= result.latency_s


def check_serving_tools(scope: dict[str, Any], tmp_path: Path) -> None:
    call = scope["call"]
    assert scope["reply"].choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)


def check_memory_full(scope: dict[str, Any], tmp_path: Path) -> None:
    assert [(r.id, r.version) for r in scope["receipts"]] == [(1, 3), (2, 3)]  # as its comment says
    assert scope["hits"][0][0].entry.text == MAY
    assert [h.entry.id for h in scope["direct"][0]] == [h.entry.id for h in scope["hits"][0]]
    assert ray.get(scope["memory"].stats.remote(token=scope["supervisor"]))["channel_reads"] == 1
    inbox = scope["inbox"]
    events = wait_for(lambda: ray.get(inbox.received.remote()), what="the launch event")
    assert [e.entry.topic for e in events] == ["launch"]  # subscribed to launch, not to pricing
    assert (tmp_path / "runs/demo/memory").is_dir()


CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "readme-openai": check_openai, "readme-memory": check_readme_memory, "readme-mission": check_readme_mission,
    "serving-handle": check_serving_handle, "serving-tools": check_serving_tools, "memory-full": check_memory_full,
}


def test_every_example_has_a_check_and_every_check_an_example():
    assert sorted(b.id for b in BLOCKS) == sorted(CHECKS)


def named_actors() -> set[tuple[str, str]]:
    return {(a["namespace"], a["name"]) for a in ray.util.list_named_actors(all_namespaces=True)}


def kill_new_actors(before: set[tuple[str, str]]) -> None:
    for namespace, name in named_actors() - before:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace))
        except ValueError:  # it ended by itself meanwhile
            continue
        gone = (namespace, name)
        wait_for(lambda gone=gone: gone not in named_actors(), timeout_s=30, what=f"actor {name} to go")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_example_runs_as_written(block, router, router_base_url, api_key, tmp_path, monkeypatch):
    monkeypatch.chdir(link_missions(tmp_path))
    monkeypatch.setenv("CONTROLPLANE_API_KEY", api_key(f"docs-{block.id}", mission="launch", agents=["writer"]))
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: None)
    monkeypatch.setattr(serving, "deploy", lambda *args, **kwargs: router)
    code = block.code.replace(LOCAL_URL, router_base_url.removesuffix("/v1"))
    before = named_actors()
    try:
        scope = run_block(block, code)
        CHECKS[block.id](scope, tmp_path)
    finally:
        kill_new_actors(before)
