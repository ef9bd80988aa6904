"""Chaos beyond the mission's own actors (scripted models; the scenarios are tests/helpers/chaos.py, which
benchmarks/bench_chaos.py runs for its figures):

- the memory actor is killed twice during 1,000 posts from agents: no acknowledged post is lost, none is stored
  twice (Ray retries a post on the restarted actor; its idempotency key makes the retry a no-op);
- 30% of backend calls fail and one model, which has a fallback, is down for 10 s: the mission succeeds, the
  breaker opens after at most its threshold of failures, and closes again after the outage;
- an agent is killed after a side-effecting tool acted: the tool never runs twice (the recorded result is
  replayed; a call whose result was never recorded fails its task instead of running again);
- the Router replica is killed during a mission under a token cap: the mission's calls go on on the replica Serve
  starts next, the cap still binds there, counting the usage from before the kill, and the mission's usage
  counts the calls from before the kill;
- the same with two Router replicas, which keep the cap in the app's budget book: one cap binds both, the other
  replica takes the calls at once, and the mission's usage counts the calls of both.

The bounds are coarse, for a loaded CI machine; the targets are in docs/benchmarks.md.
"""

from __future__ import annotations

import pytest

from tests.helpers.chaos import (
    R7_FAILURE_THRESHOLD,
    R7_OPEN_S,
    R8_CAP_TOKENS,
    R8_TASKS,
    chaos_models,
    r9_serving_config,
    run_r6,
    run_r7,
    run_r8,
    run_r9,
    run_side_effects,
)

APP = "chaos-faults"


@pytest.fixture(scope="module")
def faults_router(ray_cluster, http_port):
    """A Serve app with the chaos scenarios' scripted models (no vLLM)."""
    from ray import serve

    from controlplane.config import ServingConfig
    from serving import deploy

    config = {"router": {"agent": {"max_in_flight": 64}, "request_timeout_s": 60}, "models": chaos_models()}
    # Serve's HTTP proxy is the session's (one per cluster): the app joins it under its own route.
    client = deploy(ServingConfig.model_validate(config), app_name=APP, http_port=http_port, route_prefix=f"/{APP}")
    yield client
    serve.delete(APP)


def test_memory_actor_killed_during_posts_loses_no_acknowledged_post_and_stores_none_twice(faults_router, tmp_path):
    figures = run_r6(faults_router, str(tmp_path), posts=400, kills=2)
    assert figures["r6_status"] == "succeeded", figures
    assert figures["r6_memory_kills"] == 2
    assert figures["r6_posts_acked"] == 400, figures  # every post was acknowledged in the end
    assert figures["r6_acked_posts_lost"] == 0, figures
    assert figures["r6_duplicates"] == 0, figures


def test_backend_faults_and_an_outage_with_a_fallback_do_not_fail_the_mission(faults_router, tmp_path):
    figures = run_r7(faults_router, str(tmp_path), tasks=200)
    assert figures["r7_mission_succeeded"], figures
    assert figures["r7_outage_failures"] >= 1, figures  # the outage happened while the mission ran
    assert figures["r7_failures_before_breaker_open"] <= R7_FAILURE_THRESHOLD + 2, figures  # +2: calls in flight
    assert figures["r7_breaker_recovered_s"] is not None, figures  # it closed again before the mission ended
    assert figures["r7_breaker_recovered_s"] < 5 * R7_OPEN_S, figures
    assert figures["r7_calls_on_fallback"] > 0 and figures["r7_task_retries"] > 0, figures


def test_an_agent_killed_around_a_side_effecting_call_never_runs_it_twice(faults_router, tmp_path):
    figures = run_side_effects(faults_router, str(tmp_path))
    assert figures["side_effects_executed_twice"] == 0, figures
    assert figures["side_effects_after_result_executions"] == 1
    assert figures["side_effects_after_result_retried"], figures  # the kill hit the attempt, not after it
    assert figures["side_effects_after_result_status"] == "succeeded", figures  # the recorded result was replayed
    assert figures["side_effects_in_flight_executions"] == 1
    assert figures["side_effects_in_flight_status"] == "failed", figures
    assert figures["side_effects_in_flight_error"].startswith("ToolCallInDoubt: Tool 'record_effect_slowly'"), figures


def test_a_router_replica_killed_mid_mission_is_replaced_and_the_missions_token_cap_still_binds(faults_router,
                                                                                                tmp_path):
    """A new replica that forgot the cap would let all 12 tasks run; one that kept the cap but forgot the usage from
    before the kill, 8 (6 without a kill). It kills the module's Router replica, so it runs last here."""
    figures = run_r8(faults_router, str(tmp_path), APP)
    assert figures["r8_router_replaced"], figures
    assert figures["r8_status"] == "budget_exceeded", figures
    assert 3 < figures["r8_tasks_succeeded"] <= 7 < R8_TASKS, figures
    assert figures["r8_cap_tokens"] == R8_CAP_TOKENS and 0 < figures["r8_tokens_charged"] <= R8_CAP_TOKENS, figures
    # The result's usage counts the calls from before the kill too: the capped mission's rows are in the book.
    assert figures["r8_llm_calls"] >= figures["r8_tasks_succeeded"], figures


def test_two_router_replicas_share_one_missions_token_cap_and_usage_and_one_killed_leaves_the_other_serving(
        ray_cluster, http_port, tmp_path):
    from ray import serve

    from controlplane.config import ServingConfig
    from serving import deploy

    app = "chaos-faults-2r"
    router = deploy(ServingConfig.model_validate(r9_serving_config()), app_name=app, http_port=http_port,
                    route_prefix=f"/{app}")
    try:
        figures = run_r9(router, str(tmp_path), app)
    finally:
        serve.delete(app)
    assert figures["r9_router_replicas"] == 2, figures
    # One cap for both replicas: with a cap per replica, the chain's 12 tasks all succeed.
    assert figures["r9_status"] == "budget_exceeded", figures
    assert 5 <= figures["r9_tasks_succeeded"] <= 7 < R8_TASKS, figures
    assert figures["r9_cap_tokens"] == R8_CAP_TOKENS and 0 < figures["r9_tokens_charged"] <= R8_CAP_TOKENS, figures
    # Usage from the book: every task's call, whichever replica served it (one replica's own ledger has some).
    assert figures["r9_llm_calls"] >= figures["r9_tasks_succeeded"], figures
    # No wait for the replacement, nor for the killed replica's reservation to run out (60 s + 30 s).
    assert figures["r9_end_after_kill_s"] < 45, figures
