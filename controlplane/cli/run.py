"""`controlplane run`: validate everything -> Ray -> router -> supervisor -> progress -> run dir."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from controlplane._core.recovery import RecoveredState, replay
from controlplane._core.user_code import user_code_problems
from controlplane._logfile import read_log
from controlplane._rundir import TRACES, run_uri, unfinished_runs
from controlplane._tracing import TracingConfig, sample_ratio_from_env
from controlplane.cli._codes import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from controlplane.cli.audit import resolve_run
from controlplane.cli.connect import init_ray, record_address, starts_local_ray, use_token_auth
from controlplane.cli.progress import drop_stdout, make_progress
from controlplane.config import MissionSpec, load_mission
from controlplane.errors import MissionNotFound, SetupError, SpecError

logger = logging.getLogger(__name__)
API_KEY_FILE = "api_key"
API_KEY_TTL_S = 24 * 3600.0


def mission_api_key(keys_file: str | None, runs_dir: str, mission_id: str,
                    max_wall_s: float | None) -> tuple[str, str, str]:
    """A key of the router's HTTP API for this mission only, written to runs/<id>/api_key (mode 0600), so other
    tools can call models under the mission's budgets while it runs. Returns (key file, key id, path of the key in
    clear), as `revoke_if_seen` takes them; revoke it after. An active key an earlier driver of this mission left is
    revoked: call it once no supervisor of the id runs."""
    from serving._keys import ApiKeyStore

    now_s = time.time()
    store = ApiKeyStore(keys_file)
    clear_key, scope = store.create(f"run-{mission_id}", kind="mission", scope_id=mission_id,
                                                     now_s=now_s, expires_at_s=now_s + (max_wall_s or API_KEY_TTL_S),
                                                     replace=True)
    path = Path(runs_dir) / mission_id / API_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(clear_key + "\n")
    return str(store.path), scope.id, str(path)


def preflight(path: str) -> tuple[MissionSpec, Any]:
    """Load and check the mission, its serving config and the code it names; nothing is started. Returns (spec,
    serving config)."""
    from serving import load_serving_config

    spec = load_mission(path)
    serving = load_serving_config(spec.serving)
    known = sorted(serving.models)
    wanted = [(f"agents[{i}]({a.name}).model", a.model) for i, a in enumerate(spec.agents)]
    if spec.plan == "auto":
        wanted.append(("planner.model", spec.planner.model))
    if spec.memory.judge_model:
        wanted.append(("memory.judge_model", spec.memory.judge_model))
    problems = [SpecError(where=f"{path}: {where}", value=model,
                          why=f"the serving config ({spec.serving or 'serving/default.yaml'}) has no such model; "
                              f"known models: {', '.join(known)}",
                          fix="use a known model, or add it to the serving config named by `serving:`")
                for where, model in wanted if model not in known]
    problems += user_code_problems(spec, source=f"{path}: ")
    if spec.workspace and not Path(spec.workspace).is_dir():
        problems.append(SpecError(where=f"{path}: workspace", value=spec.workspace, why="no such folder",
                                  fix="create it, or point `workspace:` at the folder the file tools may read "
                                      "(relative to the mission file)"))
    if problems:
        raise SpecError.of(problems)
    return spec, serving


def check_storage(runs_dir: str, state_uri: str | None = None) -> None:
    """SetupError, before anything starts, when `runs_dir` (a folder) cannot be written, or `state_uri` (a folder
    or an fsspec URL) cannot be written or names a filesystem that is not installed."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    for flag, where in (("--runs-dir", runs_dir), ("--state-uri", state_uri)):
        if where is not None and "://" in where:
            try:
                fs, _ = fsspec.core.url_to_fs(where)
            except (ImportError, ValueError) as exc:
                raise SetupError(what=f"{flag} {where!r} names a filesystem fsspec cannot open here: {exc}",
                                 fix="install its fsspec package where `controlplane run` runs and on every node "
                                     "(`pip install s3fs` for s3://, `gcsfs` for gs://), or give a folder every "
                                     "node sees") from None
            if isinstance(fs, MemoryFileSystem):
                raise SetupError(what=f"{flag} {where!r} is fsspec's in-process memory: the supervisor would keep the "
                                 "mission's log in its own process, where neither this command, `resume` nor another "
                                 "node reads it", fix="give a folder, or an fsspec URL every node sees (s3://, gs://)")
        elif where is not None and not _writable_folder(Path(where).absolute()):
            raise SetupError(what=f"{flag} {where!r} cannot be written", fix=f"give a folder you may write: {flag} DIR")


def _writable_folder(path: Path) -> bool:
    """Whether `path` is, or can be made, a folder this process writes in; it is left as it was found."""
    created = [folder for folder in (path, *path.parents) if not folder.exists()]  # the deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False
    finally:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()


def mission_tracing_config(run_dir: str, spec: MissionSpec) -> TracingConfig:
    """Spans to `<run_dir>/traces.jsonl` (a local run directory; with a URL, OTLP only), and over OTLP/HTTP
    when OTEL_EXPORTER_OTLP_ENDPOINT is set; prompts and outputs in spans only with `policies.log_content`; the
    mission traced or not as OTEL_TRACES_SAMPLER (and _ARG) say."""
    path = None if "://" in run_dir else str(Path(run_dir) / TRACES)
    return TracingConfig(service_name="controlplane", file_path=path, content=spec.policies.log_content,
                         sample_ratio=sample_ratio_from_env())


def run_command(args: argparse.Namespace) -> int:
    if args.address or os.environ.get("RAY_ADDRESS"):
        use_token_auth()
    import ray

    from actors import new_mission_id, running_missions, start_mission
    from actors._launch import check_mission_log, check_not_running
    from serving import deploy, serve_http_port
    from serving._deploy import DEFAULT_HTTP_PORT, check_http_port_free
    from serving._keys import revoke_if_seen

    resuming = getattr(args, "command", "run") == "resume"
    logged = None
    if resuming:
        spec, serving, mission_id, run_dir, logged = _from_log(args.run, args.runs_dir)
    else:
        spec, serving = preflight(args.mission)
        mission_id = args.mission_id or new_mission_id(spec.name)
        run_dir = run_uri(_local_or_url(args.state_uri or args.runs_dir), mission_id)
    check_storage(args.runs_dir, getattr(args, "state_uri", None))
    check_mission_log(mission_id, run_dir, resume=resuming, state=logged)
    tracing = mission_tracing_config(run_dir, spec)
    if starts_local_ray(args.address):  # its new Serve binds the port: a holder is refused before Ray starts
        check_http_port_free("127.0.0.1", args.http_port or DEFAULT_HTTP_PORT)
    local = init_ray(args.address, args.verbose)
    ray_on_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # after ray.init, which sets its own handler
    try:
        router = deploy(serving, http_port=args.http_port, missions_running=len(running_missions()))
        port = serve_http_port()
        if args.http_port and port != args.http_port:
            print(f"serving: Serve already runs in this cluster with HTTP on port {port}, which it keeps until it "
                  f"stops; --http-port {args.http_port} is not applied", flush=True)
        prefix = ""
        if router.app_name != "controlplane":
            prefix = f"/{router.app_name}"
            print(f"serving: another config runs under other missions; this one runs as app {router.app_name!r} "
                  f"(HTTP API under {prefix}/v1)", flush=True)
        api_url = f"http://127.0.0.1:{port}{prefix}/v1"
        memory_dir = str((Path(args.runs_dir) / mission_id / "memory").resolve())
        record_address(args.runs_dir, mission_id, ray.get_runtime_context().gcs_address)
        check_not_running(mission_id)
        api_key = mission_api_key(serving.router.auth.api_keys_file, args.runs_dir, mission_id,
                                  spec.budgets.max_wall_s)

        def revoke_key() -> None:
            revoke_if_seen(*api_key, now_s=time.time())

        try:
            print(f"mission {mission_id}: {len(spec.agents)} agents; status: `controlplane status {mission_id}`, "
                  f"cancel: `controlplane cancel {mission_id}`, log: {run_dir}; HTTP API {api_url}, with the "
                  f"mission's key (revoked at its end): {api_key[2]}", flush=True)
            handle = start_mission(spec, router=router, mission_id=mission_id, memory_dir=memory_dir,
                                   router_url=api_url, run_dir=run_dir, resume=resuming, tracing=tracing,
                                   api_key=api_key)
            result = _follow(handle, mission_id, plain=args.plain, on_interrupt=revoke_key)
        finally:
            revoke_key()
        result.pop("events")  # the supervisor wrote the run directory itself
        out = result.get("run_dir", run_dir)
        ray.kill(handle)
    finally:
        signal.signal(signal.SIGTERM, ray_on_sigterm)
        if local:
            ray.shutdown()
    print(f"mission {mission_id} {result['status']}"
          f"{': ' + result['reason'] if result['reason'] else ''}; "
          f"{result['usage']['tokens']} tokens (${result['usage']['usd']:.4f}) in {result['usage']['llm_calls']} "
          "model calls, "
          f"{result['wall_s']:.1f} s; wrote {out}/", flush=True)
    return {"succeeded": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(result["status"], EXIT_FAILED)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM, which `ray job stop` sends, interrupts as Ctrl-C does: the mission is cancelled, not left running
    without its driver."""
    raise KeyboardInterrupt("SIGTERM")


def _follow(handle: Any, mission_id: str, *, plain: bool, on_interrupt: Callable[[], None]) -> dict[str, Any]:
    """The mission's result, with its progress shown meanwhile; Ctrl-C, SIGTERM or the reader of stdout going away
    (`run m.yaml | head`) calls `on_interrupt` (the key's revocation, which must not wait: `ray job stop` kills the
    driver 3 s after its SIGTERM), then cancels the mission and still waits for it."""
    from actors import follow

    try:
        with make_progress(f"mission {mission_id}", tty=False if plain else None) as progress:
            return follow(handle, progress.update)
    except KeyboardInterrupt as interrupt:
        return _cancel(handle, mission_id, str(interrupt) or "Ctrl-C", on_interrupt, say_to=sys.stdout)
    except BrokenPipeError:
        drop_stdout()
        return _cancel(handle, mission_id, "the reader of its output went away", on_interrupt, say_to=sys.stderr)


def _cancel(handle: Any, mission_id: str, how: str, on_interrupt: Callable[[], None], *,
            say_to: TextIO) -> dict[str, Any]:
    import ray

    from actors import find_supervisor, follow

    on_interrupt()
    print(f"interrupted ({how}): cancelling the mission", file=say_to, flush=True)
    ray.get(find_supervisor(mission_id).cancel.remote(f"interrupted by the driver ({how})"))
    return follow(handle)


def _local_or_url(where: str) -> str:
    return where if "://" in where else str(Path(where).resolve())


def _from_log(run: str, runs_dir: str) -> tuple[MissionSpec, Any, str, str, RecoveredState]:
    """The spec, serving config, mission id, run directory and replayed log of the mission logged in `run`: a run
    directory, or the id of a mission under `runs_dir`, as the other commands take."""
    from serving import load_serving_config

    state, run_dir = RecoveredState(), run
    with contextlib.suppress(MissionNotFound):
        run_dir = _local_or_url(resolve_run(run, runs_dir))
        state = replay(read_log(run_dir))
    if state.spec is None or state.mission_id is None:
        unfinished = unfinished_runs(runs_dir)
        raise SpecError(where="resume", value=run, why="it is neither a run directory with a mission log nor the id "
                        f"of a mission under {runs_dir}", fix="pass a mission's run directory, or its id with "
                        f"--runs-dir DIR; unfinished missions under {runs_dir}: {', '.join(unfinished) or 'none'}")
    spec = MissionSpec.model_validate(state.spec)
    return spec, load_serving_config(spec.serving), state.mission_id, run_dir, state
