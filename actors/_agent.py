"""AgentActor: one agent of a mission. It acts: `kind: llm` runs the tool-calling loop of
`controlplane._core.agent_loop` (the decisions are there; this shell does the router calls and runs the
tools), `kind: python` runs the user's `async def run(task, ctx)` with governed parts in `ctx`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import ray

from actors._attempt_runs import AttemptRuns
from actors._context import AgentContext
from actors._observe import AttemptObserver, cancel_requested, configure_process
from actors._tool_journal import JournaledToolRunner, SupervisorBuiltin
from actors._tools import Builtin, ToolRunner
from controlplane import _tracing
from controlplane._core.agent_loop import AgentLoop
from controlplane._core.builtins import MEMORY_POST_TOOL, MEMORY_SEARCH_TOOL, delegate_tool
from controlplane._core.entrypoints import PythonAgentRun, build_python_agent
from controlplane._core.loop_types import Finished, LoopEvent, LoopLimits, RunTools, Stopped, ToolCall, ToolResult
from controlplane._core.mission_log import attempt_key
from controlplane._core.prompts import StepResult, as_text, build_messages
from controlplane._core.tools import FunctionTool, ToolSpec, allowed, tool_from_decl
from controlplane._tracing import TracingConfig
from controlplane.config._tools import ToolDecl
from controlplane.config.mission import AgentSpec, MissionSpec, TaskSpec
from controlplane.errors import AgentStopped

logger = logging.getLogger(__name__)
POST_CHARS = 2000
GRAMMAR_SLACK_TOKENS = 32
MODEL_CALLS_DELIVERY_S = 0.5
"""How long a cancelled attempt waits for the supervisor to take its model-call records (below the
supervisor's CANCEL_GRACE_S, after which it kills its agents)."""
DROP_WAIT_S = 10.0
"""How long `drop_attempts` waits for the runs it cancelled to end (they deliver their model-call records)."""


def delegate_targets(spec: MissionSpec, agent: AgentSpec) -> list[str]:
    """Whom `agent` may delegate to: the other agents, and the roles another agent plays (never only itself)."""
    others = [a for a in spec.agents if a.name != agent.name]
    return sorted({a.name for a in others} | {a.role for a in others})


@dataclasses.dataclass
class _Usage:
    """What one task's model calls and tool calls cost, summed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    model_calls: int = 0
    model_s: float = 0.0
    tools_s: dict[str, float] = dataclasses.field(default_factory=dict)

    def add_reply(self, reply: Any, latency_s: float) -> None:
        self.prompt_tokens += reply.usage.prompt_tokens
        self.completion_tokens += reply.usage.completion_tokens
        self.usd += reply.usage.usd
        self.model_calls += 1
        self.model_s += latency_s


@ray.remote(num_cpus=0)
class AgentActor:
    """Runs tasks for one agent. Stateless between tasks; the supervisor owns the mission state."""

    def __init__(self, *, mission_id: str, goal: str, agent: AgentSpec, router: Any, memory: Any = None,
                 supervisor: Any = None, tools: list[ToolDecl] | None = None, mcp: Any = None,
                 workspace: str | None = None, delegate_targets: list[str] | None = None,
                 router_url: str | None = None, log_content: bool = False, approve: list[str] | None = None,
                 tracing: TracingConfig | None = None, settle_conflicts: bool = False) -> None:
        """`approve`: the mission's `policies.approve` globs; those calls wait for the supervisor's approval.
        `tracing`: where this process sends its spans (None: tracing off). `settle_conflicts`: memory posts
        wait for their contradiction checks (`policies.conflicts.settle_before_dependents`)."""
        self._settle_conflicts = settle_conflicts
        self.tracing = tracing
        configure_process(tracing, "controlplane.agent")
        self.mission_id, self.goal, self.agent = mission_id, goal, agent
        self._approve = list(approve or [])
        self.router: Any = router.on_actor_loop() if router is not None else None
        self.memory, self.supervisor, self.mcp = memory, supervisor, mcp
        self.router_url, self.log_content = router_url, log_content
        if workspace:
            os.environ["CONTROLPLANE_WORKSPACE"] = workspace  # the file tools read it in this process
        self._workspace = workspace
        self._tool_decls = [d for d in tools or [] if allowed(agent.tools, d.name)]
        self._functions: dict[str, FunctionTool] | None = None
        self._delegate_targets = list(delegate_targets or [])
        self._python: PythonAgentRun | None = None
        self._mcp_specs: dict[str, ToolSpec] = {}
        self._posts: dict[str, int] = {}  # attempt key -> the last memory post's sequence number
        self._runs = AttemptRuns()
        self._memory_reads = _memory_reader(memory)

    async def ready(self) -> dict[str, Any]:
        """Where Ray placed this agent: node and GPU ids (logical GPUs included).

        Also warms this process's path to the router (a cheap call that runs no model), and learns the
        mission's MCP tools, so the first task pays for neither. The user's code (tool functions, a python agent)
        loads here, so that code that raises fails the start with its own error: from __init__, Ray reports only
        the actor's death, with the error as text."""
        self._tool_functions()
        if self.agent.kind == "python":
            self._python_agent()
        try:
            await self.router.breaker_state(self.agent.model)
        except Exception as exc:  # an unknown model or a router hiccup shows up on the first real call
            logger.info("agent %s: router warm-up failed: %s", self.agent.name, exc)
        if self.mcp is not None:
            self._mcp_specs = await self.mcp.tools.remote()
        context = ray.get_runtime_context()
        return {"agent": self.agent.name, "node_id": context.get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    async def flush_traces(self) -> None:
        """Export this agent's queued spans (the supervisor calls it before the mission's actors are killed)."""
        _tracing.force_flush()

    async def run(self, task: TaskSpec, attempt: int, context: dict[str, Any], token: str,
                  trace: dict[str, str] | None = None, slack_s: float | None = None) -> StepResult:
        """One attempt of `task`, under the capability token the supervisor issued for it (the router and memory
        take the agent's identity from it), in an `invoke_agent` span under the supervisor's `trace` carrier;
        its router calls carry `slack_s` (the task's slack in the DAG: the router's queue serves less first).
        Raises on failure (the supervisor retries or falls back); the exception carries the attempt's detail."""
        started = time.time()
        key = attempt_key(self.mission_id, task.id, attempt)
        this_run = asyncio.current_task()
        assert this_run is not None  # Ray runs each call of an async actor as a task
        self._runs.begin(key, this_run)
        observer = AttemptObserver(agent=self.agent.name, mission_id=self.mission_id, task_id=task.id,
                                   attempt=attempt, trace=trace, sink=self.tracing, slack_s=slack_s,
                                   send_model_calls=self._send_model_calls)
        try:
            with observer:
                runner = self._runner(task, attempt, token)
                step = self._run_python if self.agent.kind == "python" else self._run_loop
                result = await step(task, attempt, context, runner, started, token, observer)
                if cancel_requested():  # nobody waits for a cancelled attempt's result: its records are sent
                    raise asyncio.CancelledError
                return dataclasses.replace(result, model_call_records=observer.model_calls)
        except BaseException:
            await self._model_calls_delivered(observer.sent_model_calls)
            raise
        finally:
            self._runs.end(key, this_run)

    async def cancel_attempts(self, keys: list[str]) -> None:
        """Cancel the runs of these attempts (the supervisor timed them out or stops): each stops its tool and
        model calls and sends its model-call records; one whose call has not begun here will not run (not
        `ray.cancel`, see `AttemptRuns`)."""
        self._runs.cancel(keys)

    async def drop_attempts(self, keys: list[str]) -> list[str]:
        """Cancel the runs of these attempts, and wait for them to end: a supervisor that restarted dispatches
        again what its dead self had dispatched, and nothing waits for the old runs' results. Returns the keys
        of those that were still running here. The restarted supervisor sends the same keys again: they may run."""
        runs = self._runs.drop(keys)
        if runs:
            await asyncio.wait(runs.values(), timeout=DROP_WAIT_S)
        return list(runs)

    # -- kind: llm -------------------------------------------------------------------------------------
    async def _run_loop(self, task: TaskSpec, attempt: int, context: dict[str, Any], runner: ToolRunner,
                        started: float, token: str, observer: AttemptObserver) -> StepResult:
        hits = await self._recall(task, token) if self.agent.fixed_memory else []
        loop = AgentLoop(
            agent=self.agent.name, task=task.id,
            messages=build_messages(self.agent, goal=self.goal, task=task, context=context, memory_hits=hits),
            known_tools=runner.specs(), allow=self.agent.tools, approve_patterns=self._approve,
            expected_output=task.expected_output,
            tool_style=self.agent.tool_style or "constrained",
            max_string_chars=max(16, self.agent.max_tokens - GRAMMAR_SLACK_TOKENS),
            limits=LoopLimits(max_steps=task.max_steps or self.agent.max_steps,
                              max_tool_calls=self.agent.max_tool_calls if task.max_tool_calls is None
                              else task.max_tool_calls, loop_repeat_limit=self.agent.loop_repeat_limit))
        usage = _Usage()
        while True:
            request = loop.next_request()
            called = time.time()
            reply = await self.chat(request.messages, token=token, json_schema=request.json_schema,
                                    tools=request.tools, timeout_s=task.timeout_s, observer=observer)
            usage.add_reply(reply, time.time() - called)
            decision = loop.on_reply(reply.text, getattr(reply, "tool_calls", None), reply.finish_reason,
                                     latency_s=time.time() - called)
            self._emit(decision.events)
            if isinstance(decision, RunTools):
                results = await asyncio.gather(*(self._run_tool(runner, call, task, attempt, observer)
                                                 for call in decision.calls))
                for result in results:
                    usage.tools_s[result.name] = usage.tools_s.get(result.name, 0.0) + result.duration_s
                self._emit(loop.on_tool_results(results))
            elif isinstance(decision, Stopped):
                raise AgentStopped(agent=self.agent.name, task=task.id, cause=decision.cause, why=decision.reason,
                                   fix=decision.fix)
            elif isinstance(decision, Finished):
                break
        posted = await self._post(task, decision.output, attempt, token) if self.agent.fixed_memory else 0
        summary = loop.summary()
        return StepResult(output=decision.output, prompt_tokens=usage.prompt_tokens,
                          completion_tokens=usage.completion_tokens, usd=usage.usd, attempt=attempt,
                          started_at_s=started,
                          ended_at_s=time.time(), model_latency_s=usage.model_s, memory_hits=len(hits),
                          posted=posted, model_calls=usage.model_calls, tool_calls=summary.tool_calls,
                          tools_s=usage.tools_s, loop=dataclasses.asdict(summary), detail=observer.detail())

    async def chat(self, messages: list[dict[str, Any]], *, token: str, json_schema: dict[str, Any] | None = None,
                   tools: list[dict[str, Any]] | None = None, timeout_s: float | None = None,
                   max_tokens: int | None = None, observer: AttemptObserver | None = None,
                   sampling: dict[str, Any] | None = None) -> Any:
        """One router call under the identity of `token` (this agent's, for the task at hand); `observer` puts it
        in the attempt's trace and time split; `sampling` holds the engine's sampling fields (`SamplingFields`)."""
        from serving import ChatRequest

        fields: dict[str, Any] = {
            "model": self.agent.model, "messages": messages, "max_tokens": max_tokens or self.agent.max_tokens,
            "temperature": self.agent.temperature, "json_schema": json_schema, "timeout_s": timeout_s,
            "token": token, **(observer.request_fields() if observer is not None else {}), **(sampling or {})}
        if tools:
            fields["tools"] = tools
        if self.log_content:
            logger.info("agent %s prompt: %s", self.agent.name, messages[-1])
        started = time.perf_counter()
        try:
            reply = await self.router.chat(ChatRequest.model_validate(fields))
        except BaseException as exc:
            self._audit_model_call(observer, None, outcome=type(exc).__name__, started=started)
            raise
        self._audit_model_call(observer, reply, outcome="ok", started=started)
        if observer is not None:
            observer.chat_done(reply)
        return reply

    def _audit_model_call(self, observer: AttemptObserver | None, reply: Any, *, outcome: str,
                          started: float) -> None:
        """One `model.call` record for the mission's audit log: model, identity, tokens, cost, latency, outcome;
        never content. An attempt's records go to the supervisor with its outcome (`AttemptObserver`)."""
        if self.supervisor is None:
            return
        spent = {"prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0}
        if reply is not None:
            spent = {name: getattr(reply.usage, name) for name in spent}
        record = {"model": reply.model if reply is not None else self.agent.model, "agent": self.agent.name,
                  "task": observer.task_id if observer is not None else None,
                  "attempt_key": observer.attempt_key if observer is not None else None, **spent,
                  "latency_s": round(time.perf_counter() - started, 6), "outcome": outcome}
        if observer is not None:
            observer.model_calls.append(record)
        else:
            self._send_model_calls([record])

    def _send_model_calls(self, records: list[dict[str, Any]]) -> Any:
        return self.supervisor.on_model_calls.remote(records) if self.supervisor is not None else None

    async def _model_calls_delivered(self, sent: Any) -> None:
        """A cancelled attempt ends only once the supervisor holds its model-call records (`sent`, the ref of
        their delivery): the supervisor waits for its cancelled attempts before it writes the mission log's end,
        and the agent may be killed then."""
        if sent is None:
            return
        try:
            await asyncio.wait_for(sent, MODEL_CALLS_DELIVERY_S)
        except Exception as exc:
            logger.warning("agent %s: a cancelled attempt's model-call records may not have reached the "
                           "supervisor (%r)", self.agent.name, exc)

    async def _run_tool(self, runner: ToolRunner, call: ToolCall, task: TaskSpec, attempt: int,
                        observer: AttemptObserver) -> ToolResult:
        """Run an authorized call; one that needs approval first waits (no model call meanwhile) for a person."""
        if call.authorization.decision == "needs_approval":
            refusal = await self.approval_refusal(call, task, attempt)
            if refusal is not None:
                return ToolResult.failure(call, refusal)
        with observer.tool(call.name, call_id=call.id,
                           arguments=call.arguments if self.log_content else None) as span:
            result = await runner.run(call)
            if self.log_content:
                _tracing.record_tool_result(span, result.content)
            return result

    async def approval_refusal(self, call: ToolCall, task: TaskSpec, attempt: int) -> str | None:
        """None once the supervisor's approval says yes; otherwise why not, for the model to read."""
        if self.supervisor is None:
            return f"tool {call.name!r} needs a human approval and this agent has no supervisor to ask"
        approval = await self.supervisor.request_approval.remote(
            call.id, agent=self.agent.name, tool=call.name, arg_digest=call.authorization.arguments_digest,
            task=task.id, attempt=attempt, arguments=call.arguments)
        if approval["status"] == "approved":
            return None
        return (f"tool {call.name!r} was not approved (approval {approval['id']} denied by {approval['decided_by']}: "
                f"{approval['reason'] or 'no reason given'}); do without it or answer that it was refused")

    def _emit(self, events: list[LoopEvent]) -> None:
        """Tool events (denials, invalid calls, failures) reach the mission's event stream as they happen."""
        if events and self.supervisor is not None:
            self.supervisor.on_agent_events.remote([event.emit_fields() for event in events])

    def _tool_functions(self) -> dict[str, FunctionTool]:
        if self._functions is None:
            self._functions = {d.name: tool_from_decl(d, where=f"tools({d.name})") for d in self._tool_decls}
        return self._functions

    # -- kind: python ----------------------------------------------------------------------------------
    def _python_agent(self) -> PythonAgentRun:
        if self._python is None:
            assert self.agent.entrypoint is not None  # the spec requires one for kind python
            self._python = build_python_agent(self.agent.entrypoint, where=f"agents({self.agent.name}).entrypoint")
        return self._python

    async def _run_python(self, task: TaskSpec, attempt: int, context: dict[str, Any], runner: ToolRunner,
                          started: float, token: str, observer: AttemptObserver) -> StepResult:
        ctx = AgentContext(actor=self, task=task, attempt=attempt, context=context, runner=runner, token=token,
                           observer=observer)
        before = await self._router_spend()
        output = await self._python_agent()(task, ctx)
        # Calls an outside client (LangGraph, the Agents SDK) made through ctx.openai_base_url reach the router
        # under this agent's identity: its ledger holds them, and ctx.chat's calls too.
        spent = {key: value - before.get(key, 0) for key, value in (await self._router_spend()).items()}
        return StepResult(output=output, prompt_tokens=max(ctx.usage["prompt_tokens"], int(spent["prompt_tokens"])),
                          completion_tokens=max(ctx.usage["completion_tokens"], int(spent["completion_tokens"])),
                          usd=max(ctx.usage["usd"], spent["usd"]), attempt=attempt, started_at_s=started,
                          ended_at_s=time.time(), model_latency_s=ctx.usage["model_s"],
                          model_calls=max(ctx.usage["model_calls"], int(spent["calls"])),
                          tool_calls=ctx.usage["tool_calls"], detail=observer.detail())

    async def _router_spend(self) -> dict[str, float]:
        """This agent's calls, tokens and USD in the router's ledger so far (one mission's rows, summed over models).
        Tasks that run at once on one agent (max_concurrency > 1) share the difference."""
        totals = {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "usd": 0.0}
        try:
            rows = await self.router.usage(self.mission_id)
        except Exception as exc:  # accounting must not fail the task; the ctx.chat counts remain
            logger.info("agent %s: router usage unavailable: %s", self.agent.name, exc)
            return totals
        for row in rows:
            if row["agent_id"] == self.agent.name:
                for key in totals:
                    totals[key] += float(row.get(key, 0))
        return totals

    # -- tools -----------------------------------------------------------------------------------------
    def _runner(self, task: TaskSpec, attempt: int, token: str) -> ToolRunner:
        builtins: dict[str, tuple[ToolSpec, Builtin]] = {}
        if self.memory is not None:
            builtins[MEMORY_SEARCH_TOOL.name] = (MEMORY_SEARCH_TOOL, lambda args: self._memory_search(args, token))
            builtins[MEMORY_POST_TOOL.name] = (
                MEMORY_POST_TOOL, lambda args: self._memory_post(task, args, attempt, token))
        by_supervisor: dict[str, tuple[ToolSpec, SupervisorBuiltin]] = {}
        if self.supervisor is not None and self._delegate_targets:
            spec = delegate_tool(self._delegate_targets)
            by_supervisor[spec.name] = (spec, lambda args, intent: self.supervisor.delegate.remote(
                task.id, args["to"], args["description"], intent=intent))
        return JournaledToolRunner(
            functions=self._tool_functions(), builtins=builtins, supervisor_builtins=by_supervisor, mcp=self.mcp,
            mcp_specs=self._mcp_specs, workspace=self._workspace, supervisor=self.supervisor, task=task.id,
            attempt_key=attempt_key(self.mission_id, task.id, attempt), call_prefix=f"{self.mission_id}/{task.id}")

    async def _memory_search(self, args: dict[str, Any], token: str) -> list[dict[str, Any]]:
        hits = await self._search(args["query"], int(args.get("k", 3)), token)
        return [{"agent": agent, "text": text, "score": round(score, 3)} for score, agent, text in hits]

    async def _memory_post(self, task: TaskSpec, args: dict[str, Any], attempt: int, token: str) -> dict[str, Any]:
        posted = await self._post(task, args["text"], attempt, token, topic=args.get("topic"))
        return {"posted": posted, "namespace": self.agent.memory.write[0] if self.agent.memory.write else None}

    async def _search(self, query: str, k: int, token: str, *, exclude_tasks: Sequence[str] = (),
                      min_score: float | None = None) -> list[tuple[float, str, str]]:
        from memory import SearchFilters

        filters = SearchFilters(mission_id=self.mission_id, exclude_task_ids=list(exclude_tasks))
        scored: list[tuple[float, str, str]] = []
        for namespace in self.agent.memory.read:
            with _tracing.memory("search_memory", namespace, agent=self.agent.name, query=query):
                found = await self._memory_reads.search(query, k=k, namespace=namespace, token=token,
                                                        filters=filters, min_score=min_score)
            scored += [(hit.score, hit.entry.agent_id, hit.entry.text) for hit in found[0]]
        scored.sort(key=lambda hit: -hit[0])
        return scored[:k]

    async def _recall(self, task: TaskSpec, token: str) -> list[str]:
        """The top `memory_k` notes for the task (those at `memory_min_score` or above), leaving out its
        dependencies' own: their results are already in the prompt, in full."""
        if self.memory is None or self.agent.memory_k == 0:
            return []
        hits = await self._search(task.description, self.agent.memory_k, token, exclude_tasks=task.depends_on,
                                  min_score=self.agent.memory_min_score)
        return [f"{agent}: {text}" for _, agent, text in hits]

    async def _post(self, task: TaskSpec, output: Any, attempt: int, token: str, *, topic: str | None = None) -> int:
        if self.memory is None or not self.agent.memory.write:
            return 0
        from memory import NewEntry

        key = attempt_key(self.mission_id, task.id, attempt)
        sequence = self._posts[key] = self._posts.get(key, -1) + 1  # a rerun attempt repeats its keys
        entry = NewEntry(mission_id=self.mission_id, agent_id=self.agent.name, task_id=task.id,
                         namespace=self.agent.memory.write[0], topic=topic or task.topic or task.id,
                         text=as_text(output)[:POST_CHARS] or "(empty)", metadata={"role": self.agent.role},
                         idempotency_key=f"{key}/post/{sequence}")
        with _tracing.memory("update_memory", entry.namespace, agent=self.agent.name):
            receipts = await self.memory.post.remote([entry], token=token, settle_checks=self._settle_conflicts)
        return len(receipts)


def _memory_reader(memory: Any) -> Any:
    if memory is None:
        return None
    from memory import MemoryReader

    return MemoryReader(memory)
