"""bench_fleet's agent: a `kind: python` agent whose task makes `calls` router calls one after another, each the
benchmark prompt of its index with `max_tokens` and `ignore_eos` (the offline ceiling gets the same prompts).

Its imports are at the top, as a user's agent module's would be: the agent loads its entrypoint when it starts,
so they are not in the measured window (imported in `run`, httpx and rich took 2.1 s there, 16 agents at once)."""

from __future__ import annotations

import json
from typing import Any

from benchmarks._serving_load import prompt


async def run(task: Any, ctx: Any) -> list[int]:
    """The task's description is JSON: {"first": prompt index, "calls": n, "max_tokens": t}. Returns each call's
    completion tokens."""
    plan = json.loads(task.description)
    tokens = []
    for index in range(plan["first"], plan["first"] + plan["calls"]):
        reply = await ctx.chat(prompt(index), max_tokens=plan["max_tokens"], ignore_eos=True)
        tokens.append(reply.usage.completion_tokens)
    return tokens
