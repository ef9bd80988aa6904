"""Prefix-affinity replica choice with a power-of-two fallback. Pure logic.

Requests whose prompts share a stable prefix (the same system prompt and tools) get the same
preferred replica by rendezvous hashing, so vLLM's prefix cache hits on that replica. The task
text after that prefix is not part of the key: one agent's tasks all go to one replica. When the
preferred replica already runs `busy_at` or more requests, the less loaded of two random
candidates takes the request instead.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

PREFIX_CHARS = 512


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def prefix_key(messages: Sequence[Mapping[str, Any]], *, tools: Any = None, agent: str | None = None) -> str:
    """The key of a chat's stable prefix: its leading system messages and its tools. Without a system
    message, the agent (whose calls continue one conversation) stands for the prefix."""
    system = [str(m["content"]) for m in itertools.takewhile(lambda m: m["role"] == "system", messages)]
    if not system and agent is not None:
        return _digest(f"agent\x1f{agent}")
    tools_text = json.dumps(tools, sort_keys=True) if tools else ""
    return _digest("\x1e".join(["system", *system, tools_text]))


def prompt_key(prompt: str, prefix_chars: int = PREFIX_CHARS) -> str:
    """A completion prompt has no structure: its first `prefix_chars` characters stand for its prefix."""
    return _digest(f"prompt\x1f{prompt[:prefix_chars]}")


def _score(key: str, replica: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}|{replica}".encode(), digest_size=8).digest(), "big")


def preferred(key: str, replicas: Sequence[str]) -> str:
    """The replica with the highest rendezvous score: stable as replicas come and go."""
    return max(replicas, key=lambda replica: _score(key, replica))


def choose(key: str | None, replicas: Sequence[str], loads: Mapping[str, int], *, busy_at: int,
           rng: random.Random) -> str:
    """The replica for a request: the preferred one unless busy, else the less loaded of two."""
    if not replicas:
        raise ValueError("choose() needs at least one replica")
    if key is not None:
        first = preferred(key, replicas)
        if loads.get(first, 0) < busy_at:
            return first
    if len(replicas) == 1:
        return replicas[0]
    a, b = rng.sample(list(replicas), 2)
    return a if loads.get(a, 0) <= loads.get(b, 0) else b


def affinity_key(body: Mapping[str, Any], identity: Any) -> str:
    """The affinity key of a call body (chat or completion) made by `identity` (mission_id, agent_id)."""
    if "prompt" in body:
        return prompt_key(body["prompt"])
    return prefix_key(body["messages"], tools=body.get("tools"),
                      agent=f"{identity.mission_id}/{identity.agent_id}")
