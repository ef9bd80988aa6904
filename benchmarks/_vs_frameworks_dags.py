"""The workloads of bench_vs_frameworks.py as plain data, and the arithmetic on them.

Standard library only: the CrewAI side runs in its own virtual environment (crewai 1.15 pins mcp<2, controlplane
needs mcp>=2.3, so they cannot share one) and imports this module too.

- `demo_mission(raw)`: the demo mission (missions/product_launch.yaml) as the benchmark runs it: the same nine
  tasks, dependencies, agents, output schemas and max_tokens, one model call per task (no tools, so no
  read_file, calculator or delegation, which the peers would have to re-create differently).
- `wide_mission()`: 27 tasks, 9 wide, 3 layers; task (l, i) needs (l-1, i) and (l-1, i+1).
- `workload(mission)`: what a peer framework needs of a mission, as JSON-able data.
- `scripted_replies(workloads)`: the scripted engine's rules for `--scripted`: each task gets a short answer
  (valid under its schema), the same whichever framework's prompt carries the task.
- `critical_path_s`, `crewai_async_plan`, `spread`, `like_for_like_ratio`: the pure helpers.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

WIDE_WIDTH, WIDE_LAYERS, WIDE_MAX_TOKENS = 9, 3, 48
WIDE_TOPICS = ("deadlines", "lecture notes", "group projects", "exam revision", "reading lists", "lab reports",
               "part-time work", "club meetings", "weekly review")
_TOOL_DIRECTIVE = re.compile(r"\s*\{.*", re.DOTALL)


def strip_tool_directive(instructions: str) -> str:
    """The agent's instructions without the tool call it is told to make first: the JSON from the first `{` on,
    and the sentence that introduces it (the one ending in `:`)."""
    text = _TOOL_DIRECTIVE.sub("", instructions).strip()
    if not text.endswith(":"):
        return text
    head, _, _ = text[:-1].rpartition(". ")
    return f"{head}." if head else ""


def json_chars_bound(schema: Mapping[str, Any]) -> int:
    """The most characters a compact JSON value of the (flat, bounded) schema can take; a token holds at least
    one character, so a reply with this many max_tokens is never cut. Strings without maxLength count 80, numbers
    20 digits."""
    if "enum" in schema:
        return max(len(json.dumps(value)) for value in schema["enum"])
    kind = schema.get("type", "string")
    if kind == "object":
        props = schema.get("properties", {})
        return 2 + sum(len(json.dumps(name)) + 2 + json_chars_bound(sub) for name, sub in props.items())
    if kind == "array":
        return 2 + schema.get("maxItems", 8) * (json_chars_bound(schema.get("items", {})) + 2)
    if kind in ("integer", "number"):
        return 20
    return 5 if kind == "boolean" else schema.get("maxLength", 80) + 2


def demo_mission(raw: Mapping[str, Any], *, memory: bool = True) -> dict[str, Any]:
    """The demo mission with one model call per task: every agent's tools removed and its tool directive cut from
    its instructions; tasks, dependencies, schemas and memory settings unchanged.

    - max_steps 2: with no tool to call the first valid answer ends the task, and an invalid one gets the loop's
      one repair turn (at max_steps 1 the loop would add "This is your last step" to the prompt; no peer does).
    - max_tokens: at least the most characters the agent's output schemas admit (`json_chars_bound`). The demo's
      96-128 suit its constrained tool loop, which bounds strings to fit; with whole schemas SmolLM2 ran past
      96 tokens and the JSON was cut: controlplane repaired it with a second call, while LangGraph's and CrewAI's
      structured-output calls raise on a cut reply (openai's LengthFinishReasonError) and fail the run.
    - `memory=False` also drops fixed recall and the contradiction judge (no memory actor at all)."""
    mission = copy.deepcopy(dict(raw))
    for key in ("tools", "workspace", "delegation", "mcp_servers"):
        mission.pop(key, None)
    schemas: dict[str, list[Mapping[str, Any]]] = {}
    for task in mission["tasks"]:
        if isinstance(task.get("expected_output"), dict):
            schemas.setdefault(task["agent"], []).append(task["expected_output"])
    for agent in mission["agents"]:
        agent["tools"] = []
        agent["max_steps"] = 2
        agent["max_tokens"] = max([agent.get("max_tokens", 256)] + [json_chars_bound(schema)
                                                                     for schema in schemas.get(agent["name"], [])])
        agent["instructions"] = strip_tool_directive(agent.get("instructions", ""))
        if not memory:
            agent.pop("fixed_memory", None)
            agent.pop("memory_k", None)
    if not memory:
        mission.pop("memory", None)
    mission["name"] = f"{mission['name']}-bench" + ("" if memory else "-nomem")
    return mission


def wide_mission(width: int = WIDE_WIDTH, layers: int = WIDE_LAYERS, max_tokens: int = WIDE_MAX_TOKENS
                 ) -> dict[str, Any]:
    """`width` x `layers` tasks of one short sentence each; agent `w{i}` runs column i (one task at a time)."""
    agents = [{"name": f"w{i}", "role": "writer", "instructions": "You write one short, plain sentence.",
               "max_tokens": max_tokens, "max_steps": 2, "resources": {"num_cpus": 0}} for i in range(width)]
    tasks = []
    for layer in range(layers):
        for i in range(width):
            needs = [] if layer == 0 else sorted({f"t{layer - 1}-{i}", f"t{layer - 1}-{(i + 1) % width}"})
            topic = WIDE_TOPICS[i % len(WIDE_TOPICS)]
            tasks.append({"id": f"t{layer}-{i}", "agent": f"w{i}", "depends_on": needs, "retries": 0,
                          "description": f"Step {layer}.{i}: in one sentence, say how Tidy helps with {topic}."})
    return {"name": "wide-bench", "goal": 'Launch "Tidy", a small app that turns messy notes into a clean weekly '
            "plan, to busy students.", "agents": agents, "tasks": tasks,
            "policies": {"on_failure": "skip_dependents"}}


def workload(mission: Mapping[str, Any]) -> dict[str, Any]:
    """What the peers get: the goal, and per task its agent, role, instructions, description, dependencies,
    max_tokens and JSON schema (None for text). Tasks in the mission's (topological) order."""
    agents = {a["name"]: a for a in mission["agents"]}
    tasks = [{"id": t["id"], "agent": t["agent"], "role": agents[t["agent"]]["role"],
              "instructions": agents[t["agent"]].get("instructions", ""), "description": t["description"],
              "depends_on": list(t.get("depends_on", [])), "max_tokens": agents[t["agent"]].get("max_tokens", 256),
              "schema": t.get("expected_output") if isinstance(t.get("expected_output"), dict) else None}
             for t in mission["tasks"]]
    return {"name": mission["name"], "goal": mission["goal"], "tasks": tasks}


def short_instance(schema: Mapping[str, Any]) -> Any:
    """A small value the (flat) schema accepts: strings "ok", the fewest array items, the smallest number."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: short_instance(props.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [short_instance(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    return True if kind == "boolean" else "ok"


def scripted_replies(workloads: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Scripted-engine rules: a call whose last user message names a task's description gets that task's short
    answer (JSON under its schema, else a short sentence)."""
    rules = []
    for work in workloads:
        for task in work["tasks"]:
            text = json.dumps(short_instance(task["schema"])) if task["schema"] else "Tidy helps."
            rules.append({"match": re.escape(task["description"]), "turn": "user", "text": text})
    return rules


def critical_path_s(depends_on: Mapping[str, Sequence[str]], seconds: Mapping[str, float]) -> float:
    """The longest chain of the DAG, each task weighing `seconds[task]` (its model calls' latencies; 0 when
    missing): the makespan of a system that adds nothing to the model calls it must make one after another."""
    finish: dict[str, float] = {}

    def done_at(task: str) -> float:
        if task not in finish:
            finish[task] = max((done_at(d) for d in depends_on[task]), default=0.0) + seconds.get(task, 0.0)
        return finish[task]

    return max((done_at(task) for task in depends_on), default=0.0)


def _descendants(depends_on: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    children: dict[str, set[str]] = {task: set() for task in depends_on}
    for task, needs in depends_on.items():
        for need in needs:
            children[need].add(task)
    found: dict[str, set[str]] = {}

    def below(task: str) -> set[str]:
        if task not in found:
            found[task] = set().union(*({c} | below(c) for c in children[task])) if children[task] else set()
        return found[task]

    return {task: below(task) for task in depends_on}


def crewai_async_plan(order: Sequence[str], depends_on: Mapping[str, Sequence[str]]) -> list[tuple[str, bool]]:
    """`(task, async_execution)` in `order` (topological), as parallel as CrewAI's sequential process allows.

    CrewAI runs a stretch of async tasks at once, and a sync task first waits for all of them. Its rules: an async
    task may not take an async task of the same stretch as context, and a crew ends with at most one async task.
    So a task is sync when it needs a task of the open stretch, or when it is a bottleneck (every other task is its
    ancestor or its descendant: nothing could run beside it anyway); otherwise async. The last task of a trailing
    stretch of several turns sync."""
    below = _descendants(depends_on)
    plan: list[tuple[str, bool]] = []
    stretch: set[str] = set()
    for task in order:
        others = set(order) - {task} - below[task]
        bottleneck = all(task in below[other] for other in others)
        if bottleneck or stretch & set(depends_on[task]):
            plan.append((task, False))
            stretch = set()
        else:
            plan.append((task, True))
            stretch.add(task)
    if len(stretch) > 1:
        plan[-1] = (plan[-1][0], False)
    return plan


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median, min and max."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def like_for_like_ratio(ours: list[dict], theirs: list[dict], *, tolerance: float = 0.02
                        ) -> tuple[int, float | None]:
    """Our median makespan over theirs, over only the repetitions (paired by round) in which both runs
    succeeded, sent the same prompt tokens and drew completion tokens within `tolerance` of each other; and how
    many those are. With temperature 0 and the same prompts, the model's text still differs now and then: vLLM's
    results depend on what else is in the batch, and a greedy token that flips can lengthen every answer after it
    (488 completion tokens against 740 in one run), or change one token (488 against 489)."""
    def alike(a: dict, b: dict) -> bool:
        return (a["ok"] and b["ok"] and a["prompt_tokens"] == b["prompt_tokens"]
                and abs(a["completion_tokens"] - b["completion_tokens"]) <= tolerance * b["completion_tokens"])

    pairs = [(a["makespan_s"], b["makespan_s"]) for a, b in zip(ours, theirs) if alike(a, b)]
    if not pairs:
        return 0, None
    return len(pairs), round(statistics.median(a for a, _ in pairs) / statistics.median(b for _, b in pairs), 3)
