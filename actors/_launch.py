"""Starting, finding and following missions from a driver (the CLI, a test, a notebook)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ray

from actors._cluster import head_options, read_capacity
from actors._durable import default_run_dir
from actors._names import MISSION_NAMESPACE
from actors._supervisor import SupervisorActor
from controlplane._core.identity import mission_key
from controlplane._core.placement import check_resources
from controlplane._core.recovery import RecoveredState, replay
from controlplane._core.user_code import check_user_code
from controlplane._logfile import read_log
from controlplane._tracing import TracingConfig
from controlplane.config.mission import NAME_PATTERN, MissionSpec
from controlplane.errors import MissionIdInUse, MissionNotFound, SetupError, SpecError
from serving._client import RouterClient
from serving._secrets import load_or_create_root_secret, secret_file_env


def new_mission_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def start_mission(spec: MissionSpec, *, router: RouterClient, mission_id: str | None = None,
                  memory_dir: str | None = None, router_url: str | None = None, run_dir: str | None = None,
                  resume: bool = False, tracing: TracingConfig | None = None,
                  api_key: tuple[str, ...] | None = None) -> Any:
    """Check the spec against what the cluster has or its autoscaler may add, then create the detached
    SupervisorActor (on the head, when it declares the head resource) named after the mission id and start it;
    returns its handle. `router_url` is the router's OpenAI base URL (`http://host:port/v1`, or
    `/<app>/v1` for a separate app), given to python agents as `ctx.openai_base_url`. `run_dir` holds the mission log
    (default: a temporary directory); with `resume` the mission continues from the log there, else that log
    must not exist. Ray restarts the supervisor when it dies, and it continues from its log. The supervisor gets
    the mission's key, derived here from the cluster root secret, which never leaves this process. With
    `tracing`, the mission is one trace: its supervisor, agents and router calls send their spans to that config's
    file and OTLP endpoint (content in spans only with `policies.log_content`). `api_key`: (key file, key id, files
    holding the key in clear...) of an HTTP API key made for this mission; the supervisor revokes it and deletes
    those files when the mission ends, when its node sees the key file."""
    if not isinstance(spec, MissionSpec):
        raise TypeError(f"spec of type {type(spec).__name__} is not a MissionSpec. Fix: pass "
                        "controlplane.parse_mission(dict) or controlplane.load_mission(path)")
    check_user_code(spec)
    check_arguments(mission_id, router)
    check_resources(spec, read_capacity())
    router.check_deployed()
    mission_id = mission_id or new_mission_id(spec.name)
    run_dir = run_dir or default_run_dir(mission_id)
    check_mission_id(mission_id, run_dir, resume=resume)
    key = mission_key(load_or_create_root_secret(), mission_id)
    handle = SupervisorActor.options(  # type: ignore[attr-defined]
        name=mission_id, namespace=MISSION_NAMESPACE, lifetime="detached", max_restarts=-1, max_task_retries=-1,
        **head_options("supervisor"),
    ).remote(spec, mission_id=mission_id, router=router, namespace=MISSION_NAMESPACE, memory_dir=memory_dir,
             router_url=router_url, run_dir=run_dir, mission_key=key, tracing=tracing, api_key=api_key,
             secret_files=secret_file_env())  # paths only: the memory actor finds the root secret the key came from
    ray.get(handle.start.remote())
    return handle


def check_arguments(mission_id: str | None, router: Any) -> None:
    """Before anything starts (a mission with no router would start agents that all fail): SpecError when the
    mission id is not a name, TypeError when `router` is not a router's client, SetupError when this process has
    not started Ray."""
    if mission_id is not None and not re.match(NAME_PATTERN, mission_id):
        raise SpecError(where="mission_id", value=mission_id, why="it names the supervisor actor, the run directory "
                        "and the mission's keys", fix="use letters, digits, '_', '.' and '-' only, starting with a "
                        "letter or digit")
    if not isinstance(router, RouterClient):
        raise TypeError(f"router={router!r} is not a router's client: the agents call every model through it. Fix: "
                        "pass what serving.deploy(config) returns, or serving.RouterClient(app_name) for a router "
                        "deployed already")
    check_ray_started()


def check_ray_started() -> None:
    """SetupError when this process has not called ray.init(): Ray's own auto-init would start a new, empty local
    Ray, where no mission runs."""
    if not ray.is_initialized():
        raise SetupError(what="Ray is not started in this process",
                         fix="call ray.init() first, or ray.init(address=...) to join a cluster")


def check_mission_id(mission_id: str, run_dir: str, *, resume: bool) -> None:
    """MissionIdInUse when a supervisor of that id runs, or the run directory's log says otherwise than
    `resume`."""
    check_not_running(mission_id)
    check_mission_log(mission_id, run_dir, resume=resume)


def check_not_running(mission_id: str) -> None:
    """MissionIdInUse when a supervisor of that id runs in this cluster."""
    if mission_id in running_missions():
        raise MissionIdInUse(mission_id=mission_id, why="a supervisor of that id is running on this cluster",
                             fix=f"follow it with `controlplane wait {mission_id}`, or pick another --mission-id")


def check_mission_log(mission_id: str, run_dir: str, *, resume: bool, state: RecoveredState | None = None) -> None:
    """MissionIdInUse when the run directory's log (`state`, when the caller replayed it already) says otherwise
    than `resume`: the mission there ended, or an unfinished one is there and `resume` is False. Needs no Ray."""
    state = replay(read_log(run_dir)) if state is None else state
    if state.finished:
        raise MissionIdInUse(mission_id=mission_id, why=f"the mission in {run_dir} already ended ({state.status})",
                             fix=f"read it with `controlplane result {run_dir}`"
                                 + ("" if resume else ", or pick another --mission-id"))
    if state.spec is not None and not resume:
        raise MissionIdInUse(mission_id=mission_id, why=f"{run_dir} holds the log of an unfinished mission",
                             fix=f"continue it with `controlplane resume {run_dir}`, or pick another --mission-id")


def running_missions() -> list[str]:
    """Ids of the supervisors alive in this cluster."""
    check_ray_started()
    actors = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in actors if a["namespace"] == MISSION_NAMESPACE and ":" not in a["name"])


def find_supervisor(mission_id: str, *, recorded: Sequence[str] = ()) -> Any:
    """The live supervisor of `mission_id`; MissionNotFound listing the known ones otherwise."""
    check_ray_started()
    try:
        return ray.get_actor(mission_id, namespace=MISSION_NAMESPACE)
    except ValueError:
        raise MissionNotFound(mission_id=mission_id, known=running_missions() + list(recorded)) from None


def follow(handle: Any, on_events: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None, *,
           poll_s: float = 0.25, timeout_s: float | None = None) -> dict[str, Any]:
    """Stream events to `on_events(new_events, summary)` until the mission ends; return its result. `handle` is
    what `start_mission` returned, or the mission's id."""
    if isinstance(handle, str):
        handle = find_supervisor(handle)
    cursor, deadline = 0, None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        done = ray.get(handle.wait.remote(poll_s))
        events = ray.get(handle.events_since.remote(cursor))
        cursor += len(events)
        if on_events is not None:
            on_events(events, ray.get(handle.summary.remote()))
        if done:
            return ray.get(handle.result.remote()) | {"events": ray.get(handle.events_since.remote(0))}
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the mission did not end within timeout_s={timeout_s:g}; it runs on. Fix: follow its "
                               "handle again, or cancel it with handle.cancel.remote(reason)")
