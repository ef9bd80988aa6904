"""Usage accounting per mission, agent and model. Pure logic; the router exports it as Ray metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class UsageTotals:
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s_sum: float = 0.0
    latency_s_sum: float = 0.0
    usd: float = 0.0


class Ledger:
    def __init__(self) -> None:
        self._totals: dict[tuple[str, str, str], UsageTotals] = {}

    def _row(self, mission_id: str, agent_id: str, model: str) -> UsageTotals:
        return self._totals.setdefault((mission_id, agent_id, model), UsageTotals())

    def record(self, mission_id: str, agent_id: str, model: str, *, prompt_tokens: int,
               completion_tokens: int, ttft_s: float, latency_s: float, usd: float = 0.0) -> None:
        row = self._row(mission_id, agent_id, model)
        row.calls += 1
        row.prompt_tokens += prompt_tokens
        row.completion_tokens += completion_tokens
        row.ttft_s_sum += ttft_s
        row.latency_s_sum += latency_s
        row.usd += usd

    def record_error(self, mission_id: str, agent_id: str, model: str, *, prompt_tokens: int = 0,
                     completion_tokens: int = 0, usd: float = 0.0) -> None:
        """A failed call, with what it was charged (the budget ledger charges failed calls too)."""
        row = self._row(mission_id, agent_id, model)
        row.errors += 1
        row.prompt_tokens += prompt_tokens
        row.completion_tokens += completion_tokens
        row.usd += usd

    def snapshot(self, mission_id: str | None = None) -> list[dict]:
        """One row per (mission, agent, model), optionally for one mission."""
        return [{"mission_id": m, "agent_id": a, "model": model, **asdict(totals)}
                for (m, a, model), totals in sorted(self._totals.items())
                if mission_id is None or m == mission_id]
