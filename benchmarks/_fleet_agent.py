"""bench_fleet's agent: a `kind: python` agent whose task makes `calls` router calls one after another, each the
benchmark prompt of its index with `max_tokens` and `ignore_eos` (the offline ceiling gets the same prompts)."""

from __future__ import annotations

import json
from typing import Any


async def run(task: Any, ctx: Any) -> list[int]:
    """The task's description is JSON: {"first": prompt index, "calls": n, "max_tokens": t}. Returns each call's
    completion tokens."""
    from benchmarks._serving_load import prompt

    plan = json.loads(task.description)
    tokens = []
    for index in range(plan["first"], plan["first"] + plan["calls"]):
        reply = await ctx.chat(prompt(index), max_tokens=plan["max_tokens"], ignore_eos=True)
        tokens.append(reply.usage.completion_tokens)
    return tokens
