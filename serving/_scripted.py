"""The scripted engine: deterministic replies with a fixed latency, for tests of the control path.

It runs inside a real replica behind the real router; only the text generation is scripted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any


def count_tokens(text: str) -> int:
    """The scripted engine's token count: whitespace-separated words (at least 1 for non-empty)."""
    return len(text.split()) or (1 if text else 0)


class ScriptedEngine:
    def __init__(self, replies: Sequence[Mapping[str, str]]) -> None:
        self._rules = [(re.compile(rule["match"]), rule["text"]) for rule in replies]

    def reply(self, messages: Sequence[Mapping[str, str]], *, choice: Sequence[str] | None = None,
              json_schema: Mapping[str, Any] | None = None) -> str:
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        matched = next((text for pattern, text in self._rules if pattern.search(last_user)), None)
        if choice:
            return matched if matched in choice else choice[0]
        if json_schema is not None:
            if matched is None:
                return json.dumps({})
            json.loads(matched)
            return matched
        if matched is not None:
            return matched
        return f"scripted reply to: {last_user[:80]}"


def truncate(text: str, max_tokens: int) -> tuple[str, str]:
    """Cut `text` to `max_tokens` words; returns the text and the finish reason."""
    words = text.split()
    if count_tokens(text) <= max_tokens:
        return text, "stop"
    return " ".join(words[:max_tokens]), "length"
