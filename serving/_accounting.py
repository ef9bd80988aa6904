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
        self._totals: dict[str, dict[tuple[str, str], UsageTotals]] = {}
        """Per mission, per (agent, model)."""

    def _row(self, mission_id: str, agent_id: str, model: str) -> UsageTotals:
        return self._totals.setdefault(mission_id, {}).setdefault((agent_id, model), UsageTotals())

    def record(self, mission_id: str, agent_id: str, model: str, *, prompt_tokens: int,
               completion_tokens: int, ttft_s: float, latency_s: float, usd: float = 0.0) -> UsageTotals:
        """Count a finished call; returns the call's own totals."""
        return self.add(mission_id, agent_id, model, UsageTotals(
            calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, ttft_s_sum=ttft_s,
            latency_s_sum=latency_s, usd=usd))

    def record_error(self, mission_id: str, agent_id: str, model: str, *, prompt_tokens: int = 0,
                     completion_tokens: int = 0, usd: float = 0.0) -> UsageTotals:
        """Count a failed call, with what it was charged (the budget ledger charges failed calls too)."""
        return self.add(mission_id, agent_id, model, UsageTotals(
            errors=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, usd=usd))

    def add(self, mission_id: str, agent_id: str, model: str, totals: UsageTotals) -> UsageTotals:
        """Add totals counted elsewhere (the budget book gathers every router replica's calls this way)."""
        row = self._row(mission_id, agent_id, model)
        for name, value in asdict(totals).items():
            setattr(row, name, getattr(row, name) + value)
        return totals

    def snapshot(self, mission_id: str | None = None) -> list[dict]:
        """One row per (mission, agent, model), optionally for one mission."""
        missions = sorted(self._totals) if mission_id is None else [mission_id]
        return [{"mission_id": m, "agent_id": a, "model": model, **asdict(totals)}
                for m in missions for (a, model), totals in sorted(self._totals.get(m, {}).items())]
