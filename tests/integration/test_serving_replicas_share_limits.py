"""An agent's rpm on a Serve app of two Router replicas: the replicas admit it once between them, through the
app's limiter actor, not once each."""

import asyncio

from controlplane import BackpressureError

AGENT_RPM = 6
CALLS = 16


def test_two_router_replicas_admit_an_agents_rpm_once_between_them(ray_cluster, http_port):
    import ray
    from ray import serve

    from controlplane.config import ServingConfig
    from serving import ChatMessage, ChatRequest, deploy
    from serving._limiter import LIMITER_NAMESPACE

    app = "shared-limits-2r"
    config = ServingConfig.model_validate({
        "router": {"replicas": 2, "agent": {"rpm": AGENT_RPM}, "auth": {"allow_anonymous": True}},
        "models": {"steady": {"kind": "scripted", "latency_s": 0.05}}})
    router = deploy(config, app_name=app, http_port=http_port, route_prefix=f"/{app}")
    request = ChatRequest(model="steady", messages=[ChatMessage(role="user", content="hi")], max_tokens=4)

    async def one() -> str:
        try:
            await router.chat(request)
            return "admitted"
        except BackpressureError as exc:
            return str(exc)

    async def burst() -> list[str]:
        return await asyncio.gather(*(one() for _ in range(CALLS)))

    try:
        outcomes = asyncio.run(burst())
        replicas = sum(serve.status().applications[app].deployments["Router"].replica_states.values())
    finally:
        serve.delete(app)
        ray.kill(ray.get_actor(f"{app}:limiter", namespace=LIMITER_NAMESPACE))
    assert replicas == 2
    # A bucket per replica would admit up to 2 x 6; the next request refills only after 10 s.
    assert outcomes.count("admitted") == AGENT_RPM, outcomes
    refusals = [outcome for outcome in outcomes if outcome != "admitted"]
    assert all("agent:default/anonymous is over its shared rpm=6 limit" in r for r in refusals), refusals
