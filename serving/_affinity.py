"""Prefix-affinity replica choice with a power-of-two fallback. Pure logic.

Requests whose prompts share a prefix (the same system prompt or agent role) get the same
preferred replica by rendezvous hashing, so vLLM's prefix cache hits on that replica. When the
preferred replica already runs `busy_at` or more requests, the less loaded of two random
candidates takes the request instead.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

PREFIX_CHARS = 512


def prefix_key(messages: Sequence[Mapping[str, str]], prefix_chars: int = PREFIX_CHARS) -> str:
    """A stable key for the first `prefix_chars` characters of the conversation."""
    text = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in messages)[:prefix_chars]
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


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
