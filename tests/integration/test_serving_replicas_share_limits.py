"""Two Router replicas of one Serve app share an agent's rpm and max_in_flight through the app's limiter actor: they
admit each once between them, not once each; when the limiter's process is killed, Ray restarts it and the calls
go on, none failing with anything but backpressure."""

import asyncio
import os
import signal
import time
from collections import Counter

from controlplane import BackpressureError
from tests.helpers import actor_pid, wait_for

AGENT_RPM = 6
CALLS = 16


def two_replica_app(name: str, http_port: int, agent_rpm: float | None, *, max_in_flight: int = 64,
                    latency_s: float = 0.05):
    from controlplane.config import ServingConfig
    from serving import deploy

    config = ServingConfig.model_validate({
        "router": {"replicas": 2, "agent": {"rpm": agent_rpm, "max_in_flight": max_in_flight},
                   "auth": {"allow_anonymous": True}},  # an app of the test's own: calls without a token
        "models": {"steady": {"kind": "scripted", "latency_s": latency_s}}})
    return deploy(config, app_name=name, http_port=http_port, route_prefix=f"/{name}")


def remove(name: str) -> None:
    import ray
    from ray import serve

    from serving._limiter import LIMITER_NAMESPACE

    serve.delete(name)
    ray.kill(ray.get_actor(f"{name}:limiter", namespace=LIMITER_NAMESPACE))


def request():
    from serving import ChatMessage, ChatRequest

    return ChatRequest(model="steady", messages=[ChatMessage(role="user", content="hi")], max_tokens=4)


async def outcome(router) -> str:
    try:
        await router.chat(request())
        return "admitted"
    except BackpressureError as exc:
        return str(exc)


def test_two_router_replicas_admit_an_agents_rpm_once_between_them(ray_cluster, http_port):
    from ray import serve

    app = "shared-limits-2r"
    router = two_replica_app(app, http_port, AGENT_RPM)

    async def burst() -> list[str]:
        return await asyncio.gather(*(outcome(router) for _ in range(CALLS)))

    try:
        outcomes = asyncio.run(burst())
        replicas = sum(serve.status().applications[app].deployments["Router"].replica_states.values())
    finally:
        remove(app)
    assert replicas == 2
    # A bucket per replica would admit up to 2 x 6; the next request refills only after 10 s.
    assert outcomes.count("admitted") == AGENT_RPM, outcomes
    refusals = [o for o in outcomes if o != "admitted"]
    assert all("agent:default/anonymous is over its shared rpm=6 limit" in r for r in refusals), refusals


def test_two_router_replicas_run_an_agents_max_in_flight_once_between_them(ray_cluster, http_port):
    from ray import serve

    app = "shared-slots-2r"
    router = two_replica_app(app, http_port, None, max_in_flight=2, latency_s=1.0)

    async def bursts() -> list[list[str]]:
        found = []
        for _ in range(3):  # the first warms both replicas up; each next one finds the slots given back
            found.append(await asyncio.gather(*(outcome(router) for _ in range(8))))
            await asyncio.sleep(0.5)
        return found[1:]

    try:
        outcomes, again = asyncio.run(bursts())
        deployment = serve.status().applications[app].deployments["Router"]
        replicas = sum(deployment.replica_states.values())
    finally:
        remove(app)
    assert replicas == 2
    # A count per replica would admit 2 on each of them, 4 in all, when Serve spreads the calls over both.
    assert outcomes.count("admitted") == 2 and again.count("admitted") == 2, (outcomes, again)
    refusals = [o for o in outcomes if o != "admitted"]
    assert all("agent:default/anonymous is over its shared max_in_flight=2 limit" in r for r in refusals), refusals


def test_the_slots_of_a_killed_router_replica_are_freed_once_the_scope_is_full(ray_cluster, http_port):
    """On the app's real limiter, with the names of its real Router replicas as holders. (A call of a killed replica
    cannot show it: Serve's handle may resend it to another replica, where it holds a slot again.)"""
    import ray
    from ray.serve._private.constants import SERVE_NAMESPACE

    from serving._limiter import LIMITER_NAMESPACE

    app, scope = "shared-slots-kill", "agent:m1/a1:in_flight"
    two_replica_app(app, http_port, None, max_in_flight=2)
    limiter = ray.get_actor(f"{app}:limiter", namespace=LIMITER_NAMESPACE)
    try:
        victim, other = sorted(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                               if actor["namespace"] == SERVE_NAMESPACE and f"{app}#Router#" in actor["name"])
        def refused(holder: str, slot: str) -> str | None:
            return ray.get(limiter.take.remote([(scope, 2)], holder, slot, [], {}))[0]

        assert [refused(victim, f"{victim}/{n}") for n in (1, 2)] == [None] * 2
        assert refused(other, f"{other}/1") == scope  # both holders run
        ray.kill(ray.get_actor(victim, namespace=SERVE_NAMESPACE))
        tries = iter(range(2, 1000))
        wait_for(lambda: refused(other, f"{other}/{next(tries)}") is None,
                 timeout_s=30, interval_s=0.5, what="the killed replica's slots to be freed")
        assert ray.get(limiter.in_flight.remote(scope)) == 1
    finally:
        remove(app)


def test_a_killed_limiter_is_restarted_and_no_call_fails_but_with_backpressure(ray_cluster, http_port):
    import ray

    from serving._limiter import LIMITER_NAMESPACE

    app = "shared-limits-kill"
    router = two_replica_app(app, http_port, 600_000)  # leases of 6,000 requests: a grant every few calls
    limiter = ray.get_actor(f"{app}:limiter", namespace=LIMITER_NAMESPACE)
    outcomes: list[tuple[float, str]] = []
    until = {"s": float("inf")}

    async def client() -> None:
        while time.time() < until["s"]:
            try:
                outcomes.append((time.time(), await outcome(router)))
            except Exception as exc:  # noqa: BLE001 - what reaches the caller is what the test checks
                outcomes.append((time.time(), f"{type(exc).__name__}: {exc}"))
            await asyncio.sleep(0.01)

    async def kill_after_calls() -> tuple[float, int]:
        while len(outcomes) < 50:
            await asyncio.sleep(0.05)
        pid = await asyncio.get_running_loop().run_in_executor(None, actor_pid, limiter)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        until["s"] = time.time() + 8.0
        return time.time(), pid

    async def run() -> tuple[float, int]:
        killed, *_ = await asyncio.gather(kill_after_calls(), *(client() for _ in range(8)))
        return killed

    try:
        killed_at, killed_pid = asyncio.run(run())
        restarted_pid = actor_pid(limiter)
    finally:
        remove(app)
    assert restarted_pid not in (None, killed_pid)
    kinds = Counter(text if text == "admitted" else text.split(" is over")[0] for _, text in outcomes)
    assert set(kinds) <= {"admitted", "the router's limiter"}, kinds
    after = [text for at, text in outcomes if at > killed_at + 5.0]
    assert after and all(text == "admitted" for text in after), Counter(after)


def older_limiter(name: str):
    """A detached actor in the limiter's place, as a controlplane that did not say what code it runs left it."""
    import ray

    from serving._detached import LIMITER_NAMESPACE

    @ray.remote(num_cpus=0)
    class OlderLimiter:
        def level(self, scope: str) -> float:
            return 0.0

    actor = OlderLimiter.options(name=name, namespace=LIMITER_NAMESPACE, lifetime="detached").remote()
    ray.get(actor.level.remote("any"))
    return actor


def test_deploy_replaces_a_limiter_that_another_controlplane_version_started(ray_cluster, http_port):
    import pytest
    import ray
    from ray.exceptions import RayActorError

    from serving._detached import LIMITER_NAMESPACE, code_version, retire_stale

    app = "shared-limits-upgrade"
    older = older_limiter(f"{app}:limiter")
    router = two_replica_app(app, http_port, AGENT_RPM)
    try:
        first = asyncio.run(outcome(router))
        limiter = ray.get_actor(f"{app}:limiter", namespace=LIMITER_NAMESPACE)
        runs = ray.get(limiter.code_version.remote())
        retired_again = retire_stale(app)  # what a later deploy of the app does first
        still = ray.get_actor(f"{app}:limiter", namespace=LIMITER_NAMESPACE)._actor_id == limiter._actor_id
    finally:
        remove(app)
    assert first == "admitted"
    assert runs == code_version()
    assert retired_again == [] and still  # one that runs this code keeps its buckets
    with pytest.raises(RayActorError):
        ray.get(older.level.remote("any"))


def test_a_router_replica_refuses_a_limiter_that_another_controlplane_version_started(ray_cluster):
    import pytest
    import ray

    from controlplane import SetupError
    from serving._limiter import start_limiter

    older = older_limiter("stale-app:limiter")
    try:
        with pytest.raises(SetupError, match="started by another controlplane version: its code") as refused:
            start_limiter("stale-app")
    finally:
        ray.kill(older)
    assert "which replaces it when no mission runs" in str(refused.value)
