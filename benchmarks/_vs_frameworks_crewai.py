"""The CrewAI side of bench_vs_frameworks.py, run in CrewAI's own virtual environment (crewai 1.15 pins mcp<2 and
pydantic<2.13; controlplane needs mcp>=2.3), as a subprocess that stays up for the whole benchmark.

Protocol: one JSON job per stdin line, `{"workload": ..., "mode": "sequential" | "async", "base_url": ...,
"api_key": ..., "model": ...}`; one JSON line back on stdout per job: `{"ok": true, "makespan_s": ..., "calls":
[{"task", "latency_s", "prompt_tokens", "completion_tokens"}]}` or `{"ok": false, "error": ...}`.
An empty line or EOF ends it. Anything CrewAI prints goes to stderr.

The crew is what a CrewAI user writes: one Agent per agent of the mission (role, the team goal, the agent's
instructions as backstory, an LLM pointed at the router's OpenAI API with the agent's max_tokens and temperature
0), one Task per task with its dependencies as `context` and, for a JSON-schema task, `output_pydantic` (CrewAI
sends it to the model as the response format). `sequential`: the default process. `async`: the same process with
`async_execution=True` on the tasks that CrewAI's rules let run beside others (`crewai_async_plan`).
The LLM's interceptor (CrewAI's HTTP hook) reads each response's usage, the router's latency included.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

os.environ.update(CREWAI_DISABLE_TELEMETRY="true", OTEL_SDK_DISABLED="true", CREWAI_TRACING_ENABLED="false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _vs_frameworks_dags import crewai_async_plan  # noqa: E402

CURRENT_TASK = "Current Task: "  # how CrewAI introduces the task in its prompt


def field_type(schema: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The pydantic type and Field constraints of one property of the demo's schemas."""
    if "enum" in schema:
        return Literal[tuple(schema["enum"])], {}
    kind = schema.get("type", "string")
    if kind == "array":
        from pydantic import Field

        item, item_limits = field_type(schema.get("items", {}))
        item_limits = {k: v for k, v in item_limits.items() if v is not None}
        return (list[Annotated[item, Field(**item_limits)]] if item_limits else list[item],  # type: ignore[valid-type]
                {"min_length": schema.get("minItems"), "max_length": schema.get("maxItems")})
    if kind == "integer":
        return int, {"ge": schema.get("minimum"), "le": schema.get("maximum")}
    if kind == "boolean":
        return bool, {}
    return str, {"max_length": schema.get("maxLength")}


def model_from_schema(name: str, schema: dict[str, Any]) -> Any:
    """A pydantic model with the schema's fields and constraints (flat objects, as in the demo mission)."""
    from pydantic import Field, create_model

    fields: dict[str, Any] = {}
    for prop, sub in schema.get("properties", {}).items():
        kind, limits = field_type(sub)
        limits = {k: v for k, v in limits.items() if v is not None}
        required = prop in schema.get("required", [])
        fields[prop] = (kind, Field(**limits)) if required else (kind | None, Field(None, **limits))
    return create_model(name.replace("-", "_").title(), **fields)


class UsageMeter:
    """CrewAI's HTTP interceptor: records each response's usage under the task its request was for."""

    def __init__(self, descriptions: dict[str, str]) -> None:
        self.descriptions = descriptions
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._sent = threading.local()  # the transport answers a request in the thread that sent it

    def task_of(self, request_body: bytes) -> str | None:
        text = "\n".join(str(m.get("content") or "") for m in json.loads(request_body or b"{}").get("messages", []))
        for marker in (CURRENT_TASK, ""):  # the task's own line comes before the context of earlier tasks
            found = {text.find(marker + description): task for task, description in self.descriptions.items()
                     if marker + description in text}
            if found:
                return found[min(found)]
        return None

    def sent(self, request: Any) -> Any:
        self._sent.body = request.read()
        return request

    def record(self, response: Any) -> Any:
        response.read()
        usage = json.loads(response.content or b"{}").get("usage") or {}
        call = {"task": self.task_of(self._sent.body), "latency_s": usage.get("latency_s", 0.0),
                "prompt_tokens": usage.get("prompt_tokens", 0), "completion_tokens": usage.get("completion_tokens", 0)}
        with self._lock:
            self.calls.append(call)
        return response


def build_crew(job: dict[str, Any], meter: UsageMeter) -> Any:
    import httpx
    from crewai import LLM, Agent, Crew, Process, Task
    from crewai.llms.hooks.base import BaseInterceptor

    class Interceptor(BaseInterceptor[httpx.Request, httpx.Response]):
        def on_outbound(self, message: httpx.Request) -> httpx.Request:
            return meter.sent(message)

        def on_inbound(self, message: httpx.Response) -> httpx.Response:
            return meter.record(message)

    work = job["workload"]
    agents: dict[str, Any] = {}
    for task in work["tasks"]:
        if task["agent"] not in agents:
            llm = LLM(model=f"openai/{job['model']}", base_url=job["base_url"], api_key=job["api_key"],
                      max_tokens=task["max_tokens"], temperature=0.0, interceptor=Interceptor())
            agents[task["agent"]] = Agent(role=task["role"], goal=work["goal"], backstory=task["instructions"] or
                                          task["role"], llm=llm, allow_delegation=False, verbose=False)
    spec = {task["id"]: task for task in work["tasks"]}
    order = [task["id"] for task in work["tasks"]]
    plan = (crewai_async_plan(order, {t: spec[t]["depends_on"] for t in order}) if job["mode"] == "async"
            else [(t, False) for t in order])
    tasks: dict[str, Any] = {}
    for task_id, run_async in plan:
        task = spec[task_id]
        schema = task["schema"]
        expected = (f"JSON with the fields {', '.join(schema.get('required', []))}" if schema
                    else "One short sentence.")
        tasks[task_id] = Task(description=task["description"], expected_output=expected, agent=agents[task["agent"]],
                              context=[tasks[d] for d in task["depends_on"]],
                              output_pydantic=model_from_schema(task_id, schema) if schema else None,
                              async_execution=run_async)
    return Crew(agents=list(agents.values()), tasks=[tasks[t] for t, _ in plan], process=Process.sequential,
                verbose=False)


def run(job: dict[str, Any]) -> dict[str, Any]:
    meter = UsageMeter({task["id"]: task["description"] for task in job["workload"]["tasks"]})
    crew = build_crew(job, meter)
    started = time.perf_counter()
    crew.kickoff()
    return {"ok": True, "makespan_s": time.perf_counter() - started, "calls": meter.calls}


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # CrewAI's own prints must not mix with the results
    for line in sys.stdin:
        if not line.strip():
            break
        try:
            result = run(json.loads(line))
        except Exception as exc:  # reported to the driver, which says which system failed
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(result) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
