"""Building and deploying the Serve application, and starting Serve."""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray import serve

from controlplane._core.placement import head_pin
from controlplane._model_cache import default_model_path
from controlplane._tracing import ENDPOINT_ENV
from controlplane.config import ScriptedModelSpec, ServingConfig, VLLMModelSpec
from controlplane.errors import SetupError
from serving._apps import OnConflict, choose_app, config_app_name
from serving._backends.scripted import ScriptedReplica
from serving._client import GRPC_ENV, ROUTER_DEPLOYMENT, RouterClient, grpc_setting
from serving._config import load_serving_config
from serving._detached import retire_stale
from serving._engine_args import replica_bundle, vllm_engine_kwargs
from serving._engine_cores import RESERVE_ENGINE_CORES_ENV
from serving._orphans import stop_orphaned_haproxies
from serving._secrets import secret_file_env

logger = logging.getLogger(__name__)

# The router replica routes its calls to the model replicas on its own event loop (no cross-thread hop and GIL
# hand-off per call), sends them over gRPC unless its starter's environment says otherwise, and, doing only async
# work, runs its own code on the replica's main event loop.
ROUTER_ENV = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0", GRPC_ENV: grpc_setting(),
              "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
AFFINITY_ROUTER = "serving._affinity_router:AffinityRequestRouter"
DEFAULT_HTTP_PORT = 8000
PORT_RELEASE_S = 5.0
# Ray Serve's high-throughput mode, for the Serve instance `deploy` starts (its controller, and through it every
# proxy and replica): HTTP enters through HAProxy straight to the router replica (direct ingress, no Python proxy
# hop), and replicas call each other over gRPC. An ingress replica that stops waits out a draining period for
# external load balancers; Serve's own HAProxy drops it at once, so 2 s instead of 30. Each can be overridden
# from the environment of the process that starts Serve.
SERVE_CONTROLLER_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
                        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
# HAProxy's stats and metrics ports are fixed and bound on all interfaces: a second Serve on the same machine (a
# test's own cluster) takes free ones instead.
HAPROXY_PORTS = {"RAY_SERVE_HAPROXY_STATS_PORT": 8404, "RAY_SERVE_HAPROXY_METRICS_PORT": 9101}
HAPROXY_MAXCONN_ENV = "RAY_SERVE_HAPROXY_MAXCONN"
HAPROXY_FILES_PER_CONNECTION = 2.5
"""HAProxy asks for 2 sockets per connection plus a pipe (2 files) per 4 connections, as it starts: Ray 2.58's
maxconn of 20,000 asked for 50,036 open files."""
HAPROXY_SPARE_FILES = 256
"""Files for its listeners, stats and logs, beside the connections."""


def _serve_options(spec: VLLMModelSpec | ScriptedModelSpec, busy_at: int) -> dict[str, Any]:
    replicas = spec.replicas
    return {
        "autoscaling_config": {"min_replicas": replicas.min_replicas, "max_replicas": replicas.max_replicas,
                               "initial_replicas": max(1, replicas.min_replicas),
                               "target_ongoing_requests": replicas.target_ongoing_requests},
        "max_ongoing_requests": replicas.max_ongoing_requests,
        "request_router_config": {"request_router_class": AFFINITY_ROUTER,
                                  "request_router_kwargs": {"busy_at": busy_at}},
    }


def _vllm_deployment(name: str, spec: VLLMModelSpec, busy_at: int):
    with _root_logging_kept():
        import vllm.triton_utils  # noqa: F401  logs as it loads: imported first, its lines keep the caller's format
        from ray.serve.llm import LLMConfig, build_llm_deployment

        from serving._backends.vllm import VLLMReplica

    env = {"HF_HUB_OFFLINE": "1", **spec.env}
    if spec.kv_cache_space_gb is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{spec.kv_cache_space_gb:g}"
    if spec.reserve_engine_cores:
        env[RESERVE_ENGINE_CORES_ENV] = "1"
    if 0 < spec.replicas.num_gpus < 1:  # else vLLM's Ray worker asks for a whole GPU and never fits
        env.setdefault("VLLM_RAY_PER_WORKER_GPUS", f"{spec.replicas.num_gpus:g}")
    llm_config = LLMConfig(
        model_loading_config={"model_id": name, "model_source": spec.model_path or str(default_model_path())},
        engine_kwargs=vllm_engine_kwargs(spec), placement_group_config={"bundles": [replica_bundle(spec)]},
        runtime_env={"env_vars": env}, log_engine_metrics=False)
    return build_llm_deployment(llm_config, deployment_cls=VLLMReplica, name_prefix="vllm:",
                                override_serve_options=_serve_options(spec, busy_at))


SERVE_JOIN_NOTICE = "Connecting to existing Serve app"


@contextmanager
def serve_join_notice_dropped() -> Iterator[None]:
    """`serve.run` joins the Serve that `deploy` has just started, or found running, and Serve logs that "new
    http_options/controller_options will not be applied": options `serve.run` is not given, a line that reads as
    if `deploy`'s own had been dropped. Serve's logger leaves that line out while this runs."""
    serve_logger = logging.getLogger("ray.serve")

    def drop(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(SERVE_JOIN_NOTICE)

    serve_logger.addFilter(drop)
    try:
        yield
    finally:
        serve_logger.removeFilter(drop)


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """The first import of ray.serve.llm puts a JSON-lines handler in place of the root logger's handlers
    (ray.llm's setup_observability): fit for a replica's log file, not for the caller's console."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def build_app(config: ServingConfig, *, router_name: str = ROUTER_DEPLOYMENT):
    """The Serve application: one router deployment in front of one deployment per local model."""
    from serving._router import Router  # here: a process that only calls the router (an agent) skips its app
    config.check_env()
    busy_at = config.router.affinity_busy_at
    handles = {}
    for name, spec in config.models.items():
        if isinstance(spec, VLLMModelSpec):
            handles[name] = _vllm_deployment(name, spec, busy_at)
        elif isinstance(spec, ScriptedModelSpec):
            options = _serve_options(spec, busy_at)
            deployment: Any = serve.deployment(ScriptedReplica, name=f"scripted:{name}", **options,
                                               ray_actor_options={"num_cpus": spec.replicas.num_cpus})
            handles[name] = deployment.bind(
                [rule.model_dump() for rule in spec.replies], spec.latency_s,
                spec.faults.model_dump() if spec.faults is not None else None, spec.step_s)
    # Only paths travel: remote backends' API keys are read where the replica starts, never put in a runtime_env.
    otlp = {ENDPOINT_ENV: os.environ[ENDPOINT_ENV]} if os.environ.get(ENDPOINT_ENV) else {}
    # The router's own OTLP endpoint is for HTTP callers outside a mission.
    env = {**ROUTER_ENV, **secret_file_env(), **otlp}
    options = {"num_cpus": 0, "runtime_env": {"env_vars": env}, **_on_head()}
    return Router.options(name=router_name, ray_actor_options=options, num_replicas=config.router.replicas).bind(  # type: ignore[attr-defined]
        config.model_dump(mode="json"), handles)


def _on_head() -> dict[str, Any]:
    """The router goes on the head when a node declares the head resource (and Ray is up to say so)."""
    import ray

    pin = head_pin(ray.cluster_resources()) if ray.is_initialized() else {}
    return {"resources": pin} if pin else {}


def app_builder(args: dict[str, Any]):
    """`serve run serving:app_builder config=PATH` (or a Serve config file's import_path)."""
    return build_app(load_serving_config(args.get("config")))


def deploy(config: ServingConfig | None = None, *, app_name: str = "controlplane", http_port: int | None = None,
           route_prefix: str = "/", http_host: str = "127.0.0.1", missions_running: int = 0,
           on_conflict: OnConflict = "separate") -> RouterClient:
    """Start Serve if needed (HTTP on `http_host`:`http_port`, default 127.0.0.1:8000) and deploy the app;
    idempotent. A Serve instance that is already running keeps its HTTP options.

    An app that runs another config is replaced only when `missions_running` is 0; otherwise this config joins
    as a separate app `<app_name>-<hash>` (HTTP under `/<that name>`), or is refused (`on_conflict="refuse"`).
    The returned client names the app the config runs in. Before it deploys an app, it replaces that app's limiter
    and budget book if another controlplane version's code started them."""
    import ray

    config = config or load_serving_config()
    if not isinstance(config, ServingConfig):
        raise TypeError(f"config={config!r} is not a ServingConfig. Fix: pass load_serving_config(path) for a serving "
                        "YAML, or leave it out for serving/default.yaml")
    config.check_env()
    if not ray.is_initialized():
        ray.init()
    wanted = config.model_dump(mode="json")
    separate = config_app_name(app_name, wanted)
    running = {name: _running_config(name) for name in (app_name, separate)}
    choice = choose_app(app_name, wanted, running, missions_running=missions_running, on_conflict=on_conflict)
    logger.info("serving: %s", choice.reason)
    if choice.action == "reuse":
        return RouterClient(choice.name)
    application = build_app(config)
    retire_stale(choice.name)  # no mission uses the app it (re)deploys
    start_serve(http_host, http_port or DEFAULT_HTTP_PORT)
    prefix = route_prefix if choice.name == app_name else f"/{choice.name}"
    try:
        with serve_join_notice_dropped():
            serve.run(application, name=choice.name, route_prefix=prefix)
    except RuntimeError:  # Serve gave up on a deployment: say which model and why, and leave nothing half-started
        failure = deploy_failure(choice.name, serve.status().applications.get(choice.name))
        serve.delete(choice.name)
        raise failure from None
    logger.info("serving app %r is running with models %s", choice.name, sorted(config.models))
    return RouterClient(choice.name)


def deploy_failure(app_name: str, status: Any) -> SetupError:
    """The error for an app Serve could not deploy: each failed model and its replica's error, the last line of
    the traceback that ends Serve's message."""
    failed = {name: deployment.message for name, deployment in (status.deployments.items() if status else ())
              if deployment.status == "DEPLOY_FAILED"}
    causes = [f"{_deployment_label(name)}: {(message.strip().splitlines() or ['no message'])[-1].rstrip('.')}"
              for name, message in sorted(failed.items())]
    why = "; ".join(causes) if causes else (status.message if status else "Serve gave no reason")
    traceback = "the replica's log in the Ray dashboard has the whole traceback"
    if "Fix: " in why:  # a replica's SetupError says what to do
        return SetupError(what=f"the serving app {app_name!r} did not start: {why}", fix=traceback)
    return SetupError(what=f"the serving app {app_name!r} did not start: {why}",
                      fix="correct that model in the serving config (a vLLM model_path is a folder with its "
                          f"config.json and weights, on every node that may run it); {traceback}")


def _deployment_label(name: str) -> str:
    """`vllm:default` reads `models.default (vllm:default)`; the router's deployment keeps its name."""
    model = name.partition(":")[2]
    return f"models.{model} ({name})" if model else name


def serve_http_port() -> int | None:
    """The HTTP port of the Serve instance running in this Ray cluster, which it keeps until it stops; None when
    Serve is not running, or this process has not joined Ray."""
    import ray
    from ray.serve.context import _get_global_client  # Serve has no public getter of its HTTP options

    if not ray.is_initialized():
        return None
    client = _get_global_client(raise_if_no_controller_running=False)
    return client.http_config.port if client else None


def start_serve(http_host: str = "127.0.0.1", http_port: int = DEFAULT_HTTP_PORT) -> None:
    """`serve.start` in Serve's high-throughput mode (SERVE_CONTROLLER_ENV), unless Serve runs already: a running
    Serve keeps its options (`serve_http_port()` gives its port). First it stops the HAProxy processes a killed
    Serve left on this machine, which would keep their ports. SetupError, with no Serve left running, when another
    process holds the HTTP port."""
    if serve_http_port() is not None:
        return
    _stop_orphaned_haproxies()
    env = {name: os.environ.get(name, value) for name, value in SERVE_CONTROLLER_ENV.items()}
    env.update({name: os.environ.get(name) or str(_port_or_free(port)) for name, port in HAPROXY_PORTS.items()})
    env[HAPROXY_MAXCONN_ENV] = os.environ.get(HAPROXY_MAXCONN_ENV) or str(
        haproxy_maxconn(serve_haproxy_maxconn(), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    try:
        serve.start(http_options={"host": http_host, "port": http_port},
                    controller_options={"runtime_env": {"env_vars": env}})
    except RuntimeError as exc:  # Serve's proxy could not bind: only a Serve that was not running binds a port
        if "address already in use" not in str(exc).lower():
            raise
        serve.shutdown()  # a Serve left running would keep this port in its options for the next try
        raise _port_in_use(http_host, http_port) from None


def check_http_port_free(http_host: str, http_port: int, *, release_s: float = PORT_RELEASE_S) -> None:
    """SetupError, before Ray starts, when another process listens on the port a Serve started now would bind. The
    HAProxy processes a killed Serve left holding it are stopped first, as `start_serve` does, and their port is
    waited for up to `release_s`: one has been seen to hold it a moment after it ended."""
    deadline = time.monotonic() + (release_s if _stop_orphaned_haproxies() else 0.0)
    while not _binds(http_host, http_port):
        if time.monotonic() >= deadline:
            raise _port_in_use(http_host, http_port)
        time.sleep(0.1)


def _binds(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Serve and HAProxy bind: TIME_WAIT holds nothing
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _stop_orphaned_haproxies() -> list[int]:
    stopped = stop_orphaned_haproxies()
    if stopped:
        logger.warning("stopped %d HAProxy processes left by a Serve that was killed (pids %s)", len(stopped), stopped)
    return stopped


def _port_in_use(http_host: str, http_port: int) -> SetupError:
    return SetupError(what=f"Serve's HTTP port {http_port} on {http_host} is in use by another process",
                      fix=f"stop that process (`ss -ltnp 'sport = :{http_port}'` names it), or give Serve another "
                          f"port: `controlplane run MISSION.yaml --http-port {http_port + 1}`")


def haproxy_maxconn(serve_default: int, hard_files_limit: int) -> int:
    """Serve's HAProxy connection limit, lowered to what this machine's hard open-files limit allows: HAProxy raises
    its own limit as it starts, and where the hard limit is lower than it asks for, Serve does not start."""
    if hard_files_limit == resource.RLIM_INFINITY:
        return serve_default
    fitting = int((hard_files_limit - HAPROXY_SPARE_FILES) / HAPROXY_FILES_PER_CONNECTION)
    return max(1, min(serve_default, fitting))


def serve_haproxy_maxconn() -> int:
    """The connection limit this Ray's Serve gives HAProxy by default (20,000 in Ray 2.58, 4,096 in 2.60)."""
    from ray.serve._private import constants

    return constants.RAY_SERVE_HAPROXY_MAXCONN


def _port_or_free(port: int) -> int:
    """`port` if it is free on all interfaces here, else the next free one above it. Not an ephemeral port from the
    kernel: Ray's own processes take those at random, and one could take it before HAProxy binds it."""
    for candidate in range(port, port + 1000):
        if _binds("", candidate):
            return candidate
    raise RuntimeError(f"no free port in {port}..{port + 999} for HAProxy; set RAY_SERVE_HAPROXY_STATS_PORT and "
                       "RAY_SERVE_HAPROXY_METRICS_PORT to free ports")


def _running_config(app_name: str) -> dict[str, Any] | None:
    """The config of the router of a RUNNING app of that name, if there is one."""
    app = serve.status().applications.get(app_name)  # empty when Serve is not started
    if app is None or app.status != "RUNNING" or ROUTER_DEPLOYMENT not in app.deployments:
        return None
    return serve.get_deployment_handle(ROUTER_DEPLOYMENT, app_name).running_config.remote().result(timeout_s=30)

