"""Tracing and per-attempt detail for the actors: what the supervisor and the agent call, kept out of their loops.

- `configure_process(config, service)`: an actor turns tracing on at start (a no-op for `None`).
- `MissionTrace`: the supervisor's `invoke_workflow` span, open for the whole mission in its main task, and
  the flush at the end (agents, router, itself) before the agents are killed.
- `AttemptObserver`: one task attempt on an agent: its `invoke_agent` span, the trace fields of its router
  calls, the detail of its model calls and tools (`AttemptMeter`), and that detail on a failure too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from controlplane import _tracing as tracing
from controlplane._core.attempt_meter import AttemptMeter
from controlplane._core.mission_log import attempt_key
from controlplane._core.timeline import AttemptDetail
from controlplane._tracing import TracingConfig
from controlplane.errors import ControlPlaneError

logger = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 10.0
DETAIL_ATTRIBUTE = "attempt_detail"
MODEL_CALLS_ATTRIBUTE = "attempt_model_calls"


def configure_process(config: TracingConfig | None, service: str) -> None:
    """Turn tracing on in this actor's process, its spans named `service` (nothing when `config` is None)."""
    if config is not None:
        tracing.configure(replace(config, service_name=service))


def mission_tracing(config: TracingConfig | None, *, log_content: bool) -> TracingConfig | None:
    """The mission's tracing config: content in spans exactly when the mission's `policies.log_content` is on."""
    return None if config is None else replace(config, content=log_content)


def request_trace(config: TracingConfig | None) -> dict[str, Any]:
    """The trace fields of a `ChatRequest` made in the current span: its context and where the router sends
    the call's spans. Spread them into the request: `ChatRequest(..., **request_trace(config))`."""
    return {"trace": tracing.inject(), "trace_sink": config} if config is not None else {}


class MissionTrace:
    """The mission's root span, entered in the supervisor's main task and left in the same task."""

    def __init__(self, mission_id: str, name: str, *, parent: Mapping[str, str] | None = None) -> None:
        self._stack = contextlib.ExitStack()
        self.span = self._stack.enter_context(tracing.invoke_workflow(mission_id, name, parent=parent))

    @property
    def sampled(self) -> bool:
        """False when tracing is off or the sampler dropped the mission."""
        return self.span.is_recording()

    def handed_on(self, config: TracingConfig | None) -> TracingConfig | None:
        """The tracing config for the mission's agents and planner: none when the sampler dropped the mission, so
        they make no spans and their router calls carry no trace context."""
        return config if self.sampled else None

    def end(self, status: str, reason: str) -> None:
        self.span.set_attribute("controlplane.mission.status", status)
        if reason:
            self.span.set_attribute("controlplane.mission.reason", reason)
        self._stack.close()

    @staticmethod
    async def flush(agents: Iterable[Any], router: Any, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Export every span of the mission now: the agents' (before they are killed), the router's, this
        process's. A part that does not answer in time is logged, not raised."""
        if not tracing.enabled():
            return
        calls = [agent.flush_traces.remote() for agent in agents] + [router.flush_traces()]
        try:
            await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout_s)
        except asyncio.TimeoutError:
            logger.warning("flushing the mission's spans took over %.0f s; some may be missing", timeout_s)
        await asyncio.to_thread(tracing.force_flush, timeout_s)


class AttemptObserver:
    """One task attempt: `with AttemptObserver(...) as obs:` opens its `invoke_agent` span (a child of the
    supervisor's `trace` carrier). Inside, `obs.request_fields()` goes into each ChatRequest, `obs.chat_done(reply)`
    counts each reply, `with obs.tool(name):` times a tool. `obs.detail()` is the attempt's AttemptDetail; when
    the attempt raises, the detail rides on the exception (`detail_of` reads it in the supervisor).

    `obs.model_calls` holds the attempt's `model.call` audit records. They travel to the supervisor with the
    attempt's outcome, not one actor call each: in the result on success, on the exception on a failure
    (`model_calls_of`), and through `send_model_calls` when the attempt is cancelled (nobody awaits its outcome)."""

    def __init__(self, *, agent: str, mission_id: str, task_id: str, attempt: int,
                 trace: Mapping[str, str] | None, sink: TracingConfig | None, slack_s: float | None = None,
                 send_model_calls: Callable[[list[dict[str, Any]]], Any] | None = None) -> None:
        """`slack_s`: the task's slack in the mission's DAG, sent with each of its router calls."""
        self.agent, self.sink, self.slack_s = agent, sink, slack_s
        self.task_id, self.attempt_key = task_id, attempt_key(mission_id, task_id, attempt)
        self.meter = AttemptMeter()
        self.model_calls: list[dict[str, Any]] = []
        self._send_model_calls = send_model_calls
        self.sent_model_calls: Any = None  # what `send_model_calls` returned for a cancelled attempt (a Ray ref)
        self._span_cm = tracing.invoke_agent(agent, mission_id=mission_id, task_id=task_id, attempt=attempt,
                                             parent=trace)

    def __enter__(self) -> AttemptObserver:
        self.span = self._span_cm.__enter__()
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        detail = self.detail()
        self.span.set_attributes({"controlplane.queue_s": detail.queue_s, "controlplane.model_s": detail.model_s,
                                  "controlplane.usage.usd": detail.usd})
        sent = error is not None and (not isinstance(error, Exception) or cancel_requested())
        if sent and self.model_calls and self._send_model_calls is not None:
            self.sent_model_calls = self._send_model_calls(self.model_calls)
        if isinstance(error, Exception):
            attach_detail(error, detail, [] if sent else self.model_calls)
        self._span_cm.__exit__(kind, error, tb)

    def request_fields(self) -> dict[str, Any]:
        """What each ChatRequest of the attempt carries: its trace context and the task's slack."""
        fields = request_trace(self.sink)
        return fields if self.slack_s is None else {**fields, "slack_s": self.slack_s}

    def chat_done(self, reply: Any) -> None:
        """Count one router reply (a `ChatResult`)."""
        self.meter.add_chat(queue_s=reply.queue_s, latency_s=reply.latency_s, usd=reply.usage.usd, model=reply.model,
                            input_tokens=reply.usage.prompt_tokens, output_tokens=reply.usage.completion_tokens)

    @contextlib.contextmanager
    def tool(self, name: str, *, call_id: str | None = None, arguments: Any = None) -> Iterator[Any]:
        """An `execute_tool` span around one tool call, its time added to the attempt's `tools_s[name]`."""
        started = time.perf_counter()
        try:
            with tracing.execute_tool(name, agent=self.agent, call_id=call_id, arguments=arguments) as span:
                yield span
        finally:
            self.meter.add_tool(name, time.perf_counter() - started)

    def detail(self) -> AttemptDetail:
        return self.meter.detail()


def attach_detail(error: Exception, detail: AttemptDetail, model_calls: Sequence[dict[str, Any]] = ()) -> Exception:
    """Let a failed attempt's detail and model-call records travel with its exception across Ray (a controlplane
    error is rebuilt from its fields when unpickled, so there they go into the fields too)."""
    carried = {DETAIL_ATTRIBUTE: asdict(detail), MODEL_CALLS_ATTRIBUTE: list(model_calls)}
    for name, value in carried.items():
        setattr(error, name, value)
    if isinstance(error, ControlPlaneError):
        error.fields = {**error.fields, **carried}
    return error


def detail_of(error: BaseException) -> dict[str, Any] | None:
    """The attempt detail a failed attempt's exception carries, if any."""
    return getattr(error, DETAIL_ATTRIBUTE, None)


def model_calls_of(error: BaseException) -> list[dict[str, Any]]:
    """The `model.call` audit records a failed attempt's exception carries."""
    return getattr(error, MODEL_CALLS_ATTRIBUTE, None) or []


def cancel_requested() -> bool:
    """Whether the attempt that runs in this asyncio task was cancelled, though its code (a python agent's, say)
    may have caught the cancellation and then returned or raised something else."""
    try:
        current = asyncio.current_task()
    except RuntimeError:  # no event loop runs here
        return False
    return current is not None and current.cancelling() > 0


def late_model_calls(outcome: asyncio.Future) -> list[dict[str, Any]]:
    """The records of an attempt the supervisor cancelled that had finished or failed before the cancellation
    reached it: the result or the error carries them, and nobody awaited it. An attempt the cancellation reached
    sent its records itself (whether its code stopped, swallowed it or raised), and its outcome carries none."""
    if not outcome.done() or outcome.cancelled():
        return []
    error = outcome.exception()
    if error is None:
        return list(getattr(outcome.result(), "model_call_records", []))
    return model_calls_of(getattr(error, "cause", None) or error)
