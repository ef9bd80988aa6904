"""The handle API: the picklable client that actors (agents, the supervisor, the memory judge) call the router with."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.exceptions import RayTaskError

from controlplane._core.identity import MissionTokens, mission_key
from controlplane._ray_errors import cause_of
from controlplane.errors import SetupError
from serving._secrets import load_or_create_root_secret
from serving._types import ChatRequest, ChatResult

ROUTER_DEPLOYMENT = "Router"
GRPC_ENV = "RAY_SERVE_USE_GRPC_BY_DEFAULT"


def grpc_setting() -> str:
    """Serve sends calls between its processes over gRPC ("1") unless this process's environment says "0"."""
    return os.environ.get(GRPC_ENV, "1")


class RouterClient:
    """The handle API. Picklable: pass it into actors; it finds the router by app name."""

    def __init__(self, app_name: str = "controlplane") -> None:
        self.app_name = app_name
        self._handle: Any = None
        self._on_actor_loop = False

    def __reduce__(self):
        return (RouterClient, (self.app_name,))

    def on_actor_loop(self) -> RouterClient:
        """A client of the same app for an async actor that awaits its calls (an agent): its handle routes them on
        the actor's own event loop (no cross-thread hop and GIL hand-off per call) and sends them over gRPC, unless
        this process's environment sets RAY_SERVE_USE_GRPC_BY_DEFAULT=0. The actor must not block its loop.

        Set per handle rather than by Serve's environment variables in the actor's runtime_env: an actor with a
        runtime_env of its own cannot start on one of Ray's prestarted workers."""
        client = RouterClient(self.app_name)
        client._on_actor_loop = True
        return client

    def check_deployed(self) -> None:
        """SetupError when the connected cluster runs no Serve app of this name with a router in it."""
        apps = serve.status().applications
        if ROUTER_DEPLOYMENT in getattr(apps.get(self.app_name), "deployments", {}):
            return
        routers = sorted(name for name, app in apps.items() if ROUTER_DEPLOYMENT in app.deployments)
        raise SetupError(what=f"no router runs as Serve app {self.app_name!r} on this cluster (routers: "
                              f"{', '.join(map(repr, routers)) or 'none'})",
                         fix="deploy one with serving.deploy(config), or give RouterClient the app name of a running "
                             "router")

    @property
    def handle(self):
        if self._handle is None:
            handle = serve.get_deployment_handle(ROUTER_DEPLOYMENT, self.app_name)
            if self._on_actor_loop:  # as Serve's own proxy sets its handles up (ray.serve._private.default_impl)
                handle._init(_run_router_in_separate_loop=False)
                handle = handle.options(_by_reference=grpc_setting() == "0")
            self._handle = handle
        return self._handle

    async def chat(self, request: ChatRequest) -> ChatResult:
        """One chat completion; raises BackpressureError, BudgetExceeded, ReplicaUnavailable, SpecError.

        Cancelling the caller cancels the request in the router too (Serve does not on its own), so the router
        aborts the generation down to the engine: the kill switch relies on it."""
        response = self.handle.chat.remote(request)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except RayTaskError as exc:
            raise cause_of(exc) from None

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | ChatResult]:
        """Text deltas as they come, then the ChatResult (tool calls arrive in it, whole). Closing the stream early
        cancels the call, down to the engine."""
        response, finished = self.handle.options(stream=True).chat_stream.remote(request), False
        try:
            async for item in response:
                finished = isinstance(item, ChatResult)
                yield item
        except RayTaskError as exc:
            raise cause_of(exc) from None
        finally:
            if not finished:
                response.cancel()

    async def usage(self, mission_id: str | None = None) -> list[dict[str, Any]]:
        """Accounting rows per (mission, agent, model)."""
        return await self.handle.usage.remote(mission_id)

    async def batch_stats(self) -> dict[str, dict[str, int]]:
        """Per local model: Serve calls made to replicas (`batches`) and router calls they carried."""
        return await self.handle.batch_stats.remote()

    async def set_budget(self, token: str, agent_id: str | None = None, *, max_tokens: int | None = None,
                         max_usd: float | None = None) -> None:
        """Hard token and USD caps of the token's mission (agent_id None) or one of its agents; None = uncapped.
        Only a supervisor's token may. A call that cannot fit its worst case (prompt + max_tokens) is refused
        with BudgetExceeded."""
        try:
            await self.handle.set_budget.remote(token, agent_id, max_tokens=max_tokens, max_usd=max_usd)
        except RayTaskError as exc:
            raise cause_of(exc) from None

    async def set_mission_weight(self, mission_id: str, weight: float) -> None:
        """A mission's share of each model while calls queue (default 1; 4 gets four times a 1's share)."""
        await self.handle.set_mission_weight.remote(mission_id, weight)

    async def breaker_state(self, model: str) -> str:
        """`closed`, `open` or `half_open`."""
        return await self.handle.breaker_state.remote(model)

    async def flush_traces(self) -> bool:
        """Export the router's queued spans now (to each mission's traces file and OTLP endpoint)."""
        return await self.handle.flush_traces.remote()


def mission_tokens(mission_id: str, *, root_secret_file: str | None = None) -> MissionTokens:
    """A minter of `mission_id`'s tokens, for whoever holds the cluster root secret (the CLI, an operator, a
    test). Agents never call this: their supervisor gives them their tokens."""
    return MissionTokens(mission_key(load_or_create_root_secret(root_secret_file), mission_id), mission_id)
