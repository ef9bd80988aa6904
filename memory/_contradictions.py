"""Contradiction checks: a cheap pre-filter, then a judge on the few pairs that pass it.

The pre-filter keeps another agent's entries on the same mission and topic whose cosine to the new
entry is at or above the threshold, most similar first, at most `limit`. Most posts have none and
never reach the model. The judge is anything with `async judge(new, existing) -> Verdict`; the real
one asks a router model with a guided choice of the three verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from memory._types import VERDICTS, Entry, Verdict

JUDGE_SYSTEM = (
    "You compare two findings by different agents on the same topic. Answer 'contradict' if both cannot "
    "be true at once, 'agree' if they say compatible things, 'unrelated' if they are about different things."
)


def select_candidates(new: Entry, scored: list[tuple[float, Entry]], *, threshold: float,
                      limit: int) -> list[tuple[float, Entry]]:
    """The pairs worth judging: another agent, same mission and topic, cosine >= threshold; best first."""
    kept = [
        (score, entry) for score, entry in scored
        if score >= threshold and entry.agent_id != new.agent_id
        and entry.topic == new.topic and entry.mission_id == new.mission_id and entry.id != new.id
    ]
    kept.sort(key=lambda pair: (-pair[0], pair[1].id))
    return kept[:limit]


def judge_prompt(new: Entry, existing: Entry) -> str:
    return (
        f"Topic: {new.topic}\n"
        f"Finding A (agent {existing.agent_id}): {existing.text}\n"
        f"Finding B (agent {new.agent_id}): {new.text}\n"
        "Do A and B agree, contradict each other, or are they unrelated?"
    )


class Judge(Protocol):
    async def judge(self, new: Entry, existing: Entry) -> Verdict:
        """One of 'agree', 'contradict', 'unrelated'."""


class RouterJudge:
    """Asks a router model with a guided choice, as the mission's `memory-judge` (its calls are charged to the
    mission). `token()` gives a fresh capability token per call; the memory actor mints it."""

    def __init__(self, *, model: str, app_name: str, max_tokens: int, timeout_s: float,
                 token: Callable[[], str]) -> None:
        self.model = model
        self.app_name = app_name
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self._token = token
        self._client: Any = None

    async def judge(self, new: Entry, existing: Entry) -> Verdict:
        from serving import ChatMessage, ChatRequest, RouterClient

        if self._client is None:
            self._client = RouterClient(app_name=self.app_name)
        request = ChatRequest(
            model=self.model,
            messages=[ChatMessage(role="system", content=JUDGE_SYSTEM),
                      ChatMessage(role="user", content=judge_prompt(new, existing))],
            max_tokens=self.max_tokens, temperature=0.0, choice=list(VERDICTS),
            token=self._token(), priority="control", timeout_s=self.timeout_s,
        )
        result = await self._client.chat(request)
        return parse_verdict(result.text)


def parse_verdict(text: str) -> Verdict:
    """The verdict in a guided-choice reply. Anything else is a ValueError: the caller counts it as a
    judge error and raises no conflict."""
    verdict = text.strip().strip("'\".").lower()
    if verdict not in VERDICTS:
        raise ValueError(f"the judge replied {text[:40]!r}, not one of {list(VERDICTS)}")
    return verdict  # type: ignore[return-value]
