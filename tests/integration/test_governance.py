"""Identity and budgets on the real stack: the shared router (tokens on the handle API, API keys on HTTP) and
missions run by real supervisors on the scripted models."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from controlplane.errors import BudgetExceeded, IdentityError, ScopeDenied
from serving import ChatMessage, ChatRequest
from tests.helpers import agent, agent_token, by_id, run_mission, supervisor_token, task


def hello(token: str | None, **fields) -> ChatRequest:
    return ChatRequest(model="scripted", max_tokens=4, messages=[ChatMessage(role="user", content="hello")],
                       token=token, **fields)


def test_the_router_refuses_missing_forged_and_expired_tokens_and_widened_priority(router):
    from controlplane._core.identity import mint_token, mission_key

    forged = mint_token(mission_key(b"f" * 32, "it-gov"), mission_id="it-gov", agent_id="writer", expires_at_s=2e9)
    for bad, needle in ((None, "no capability token"), (forged, "signature"),
                        (agent_token("it-gov", "writer", ttl_s=1e-6), "expired")):
        with pytest.raises(IdentityError, match=needle):
            asyncio.run(router.chat(hello(bad)))
    with pytest.raises(ScopeDenied, match="above this identity's ceiling"):
        asyncio.run(router.chat(hello(agent_token("it-gov", "writer"), priority="control")))
    assert asyncio.run(router.usage("it-gov")) == []  # nothing ran, nothing was charged
    result = asyncio.run(router.chat(hello(agent_token("it-gov", "writer"))))
    assert result.text and [r["agent_id"] for r in asyncio.run(router.usage("it-gov"))] == ["writer"]


def test_only_the_missions_supervisor_may_arm_its_budget(router):
    with pytest.raises(ScopeDenied, match="router.set_budget needs the supervisor's token"):
        asyncio.run(router.set_budget(agent_token("it-gov-budget", "writer"), max_tokens=1))
    asyncio.run(router.set_budget(supervisor_token("it-gov-budget"), max_tokens=1))
    with pytest.raises(BudgetExceeded, match="max_tokens"):  # armed for that mission only
        asyncio.run(router.chat(hello(agent_token("it-gov-budget", "writer"))))
    assert asyncio.run(router.chat(hello(agent_token("it-gov-other", "writer")))).text


def test_http_without_a_key_is_401_and_the_openai_client_raises_authentication_error(router_base_url):
    client = openai.OpenAI(base_url=router_base_url, api_key="not-a-key-of-this-router", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="scripted", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401 and info.value.body["type"] == "authentication_error"
    bare = httpx.post(f"{router_base_url}/chat/completions", timeout=30,
                      json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert "controlplane keys create" in bare.json()["error"]["message"]
    assert httpx.get(f"{router_base_url}/models", timeout=30).status_code == 401


def test_headers_narrow_a_keys_identity_but_never_widen_it(router_base_url, router, api_key):
    key = api_key("it-gov-http", mission="it-gov-http", agents=["writer", "editor"])
    client = openai.OpenAI(base_url=router_base_url, api_key=key, max_retries=0)

    def ask(**headers):
        return client.chat.completions.create(model="scripted", max_tokens=4, extra_headers=headers,
                                              messages=[{"role": "user", "content": "hi"}])

    ask(**{"x-agent-id": "editor"})
    for spoof in ({"x-agent-id": "intruder"}, {"x-agent-id": "supervisor"}, {"x-mission-id": "another-mission"},
                  {"x-priority": "control"}):
        with pytest.raises(openai.PermissionDeniedError) as info:
            ask(**spoof)
        assert info.value.status_code == 403
    rows = asyncio.run(router.usage("it-gov-http"))
    assert [(r["agent_id"], r["calls"]) for r in rows] == [("editor", 1)]  # refusals ran and cost nothing
    assert asyncio.run(router.usage("another-mission")) == []


def test_an_agents_capability_token_is_a_bearer_credential_too_and_a_revoked_key_is_refused(
        router_base_url, api_keys, router):
    import time

    token = agent_token("it-gov-bearer", "writer")
    client = openai.OpenAI(base_url=router_base_url, api_key=token, max_retries=0)
    client.chat.completions.create(model="scripted", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert [r["agent_id"] for r in asyncio.run(router.usage("it-gov-bearer"))] == ["writer"]
    clear, scope = api_keys.create("it-gov-revoked", kind="mission", scope_id="it-gov-revoked", now_s=time.time())
    api_keys.revoke(scope.id, now_s=time.time())
    with pytest.raises(openai.AuthenticationError, match="unknown, revoked or expired"):
        openai.OpenAI(base_url=router_base_url, api_key=clear, max_retries=0).chat.completions.create(
            model="scripted", max_tokens=4, messages=[{"role": "user", "content": "hi"}])


CAP_TOKENS = 600


def test_twenty_parallel_tasks_against_a_tight_token_cap_never_overshoot_it(router):
    # Each call reserves its worst case (prompt bound + 64) before it runs, so at most two fit at once; the
    # others wait (backpressure, retried) until the cap cannot fit another call, and the mission stops.
    data = {"agents": [agent("crowd", model="scripted-slow", max_concurrency=20, max_tokens=64, tool_style="native")],
            "budgets": {"max_tokens": CAP_TOKENS}, "policies": {"retry_backoff_s": 0.05, "retry_backoff_max_s": 0.5},
            "tasks": [task(f"t{i}", "crowd", retries=10) for i in range(20)]}
    result = run_mission(router, data, mission_id="it-gov-overshoot")
    rows = asyncio.run(router.usage("it-gov-overshoot"))
    charged = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    assert result["status"] == "budget_exceeded" and "max_tokens" in result["reason"], result["reason"]
    assert charged - CAP_TOKENS <= 0, f"overshoot {charged - CAP_TOKENS} tokens"
    assert result["usage"]["tokens"] == charged and charged > CAP_TOKENS / 2
    running = [e for e in result["events"] if e.get("task") and e["status"] == "running"]
    first_end = next(n for n, e in enumerate(result["events"]) if e.get("task") and e["status"] != "running"
                     and e["status"] != "ready")
    assert len({e["task"] for e in running if e["seq"] < first_end}) == 20  # all twenty were in flight at once


def test_an_agents_own_cap_refuses_its_calls_and_usd_is_reported_per_agent(router):
    data = {"agents": [agent("capped", model="scripted-priced", budget={"max_tokens": 50}, tool_style="native"),
                       agent("paid", model="scripted-priced", max_tokens=16, tool_style="native")],
            "policies": {"on_failure": "skip_dependents"},
            "tasks": [task("small", "capped", retries=3), task("priced", "paid")]}
    result = run_mission(router, data, mission_id="it-gov-usd")
    tasks = by_id(result)
    assert tasks["small"]["status"] == "failed" and "agent 'capped'" in tasks["small"]["error"]
    assert tasks["small"]["attempts"] == 1  # a budget refusal is not retried
    assert tasks["priced"]["status"] == "succeeded"
    prompt, completion = tasks["priced"]["tokens"]["prompt"], tasks["priced"]["tokens"]["completion"]
    usd = prompt * 1000 / 1e6 + completion * 2000 / 1e6  # the serving config's price of scripted-priced
    assert tasks["priced"]["usd"] == pytest.approx(usd)
    assert result["usage"]["by_agent"]["paid"]["usd"] == pytest.approx(usd)
    assert result["usage"]["usd"] == pytest.approx(usd) and "capped" not in result["usage"]["by_agent"]


def test_every_model_call_is_an_audit_record_with_its_identity_cost_and_outcome_and_no_content(router, tmp_path):
    from controlplane._logfile import read_log, verify_log

    secret = "codename HERON"
    data = {"agents": [agent("paid", model="scripted-priced", max_tokens=16, tool_style="native"),
                       agent("capped", model="scripted-priced", budget={"max_tokens": 50}, tool_style="native")],
            "policies": {"on_failure": "skip_dependents"},
            "tasks": [task("a", "paid", f"Say hello to {secret}"), task("b", "paid", deps=("a",)),
                      task("c", "capped", retries=0)]}
    result = run_mission(router, data, mission_id="it-gov-audit-calls", run_dir=str(tmp_path / "run"))
    records = read_log(str(tmp_path / "run"))
    calls = [r for r in records if r.kind == "model.call"]
    ok = [c for c in calls if c.data["outcome"] == "ok"]
    assert sorted(c.data["task"] for c in ok) == ["a", "b"] and {c.actor for c in ok} == {"paid"}
    assert sum(c.data["prompt_tokens"] + c.data["completion_tokens"] for c in ok) == result["usage"]["tokens"]
    assert sum(c.data["usd"] for c in ok) == pytest.approx(result["usage"]["usd"])
    assert all(c.data["model"] == "scripted-priced" and c.data["latency_s"] > 0 for c in calls)
    [refused] = [c for c in calls if c.data["agent"] == "capped"]
    assert refused.data["outcome"] == "BudgetExceeded" and refused.data["prompt_tokens"] == 0
    fields = {"model", "agent", "task", "attempt_key", "prompt_tokens", "completion_tokens", "usd", "latency_s",
              "outcome"}
    assert all(set(c.data) == fields and secret not in str(c.data) for c in calls)  # no prompt, no reply
    assert verify_log(str(tmp_path / "run")).ok


def test_a_model_call_cut_off_by_the_tasks_timeout_is_in_the_audit_log(router, tmp_path):
    """A timed-out attempt is cancelled: no result or error carries its records, so the agent sends them."""
    from controlplane._logfile import read_log

    # A call that would take 20 s and a 1 s timeout: the call has started (a 0.1 s timeout on a 0.2 s call could
    # end a loaded machine's attempt before its call went out), and it is surely cut off.
    data = {"agents": [agent("slow", model="scripted-hang"), agent("quick")],
            "tasks": [task("t", "slow", timeout_s=1, retries=0, fallback_agent="quick")]}
    result = run_mission(router, data, mission_id="it-gov-audit-cut", run_dir=str(tmp_path / "run"))
    assert by_id(result)["t"]["agent"] == "quick"
    calls = sorted((r.data["agent"], r.data["outcome"]) for r in read_log(str(tmp_path / "run"))
                   if r.kind == "model.call")
    # the agent's cancel or the router's own deadline (the call carries the task's timeout) ends it first
    assert calls in ([("quick", "ok"), ("slow", "CancelledError")], [("quick", "ok"), ("slow", "DeadlineExceeded")])


@pytest.mark.parametrize("code", ["finishes_despite_cancel", "fails_despite_cancel"])
def test_a_model_call_of_an_attempt_that_ends_after_its_cancellation_is_in_the_audit_log(router, tmp_path, code):
    """The attempt's code outlives its timeout and returns or raises an error of its own: the agent sends its
    records itself. (Under `ray.cancel`, Ray reported such an attempt cancelled and dropped the error that
    carried them.)"""
    from controlplane._logfile import read_log

    data = {"agents": [agent("stubborn", kind="python", entrypoint=f"tests.helpers.agent_code:{code}"),
                       agent("quick")],
            "tasks": [task("t", "stubborn", timeout_s=1, retries=0, fallback_agent="quick")]}
    result = run_mission(router, data, mission_id="it-gov-audit-late", run_dir=str(tmp_path / "run"))
    assert by_id(result)["t"]["agent"] == "quick"
    calls = [(r.data["agent"], r.data["outcome"]) for r in read_log(str(tmp_path / "run")) if r.kind == "model.call"]
    assert sorted(calls) == [("quick", "ok"), ("stubborn", "ok")]
