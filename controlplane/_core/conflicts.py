"""Retry backoff and the conflict policies (resolver, majority, priority), as pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal


def backoff_s(attempt: int, *, base_s: float, max_s: float) -> float:
    """Wait before attempt `attempt + 1`, after `attempt` failures: base, 2*base, 4*base ... capped at max_s."""
    return min(max_s, base_s * 2 ** max(0, attempt - 1))


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One side of a conflict: an agent's posted finding."""

    agent: str
    """The agent that posted it."""
    role: str
    """That agent's role (for priority)."""
    text: str
    """The finding."""
    entry_id: str = ""
    """The memory entry id, when it came from memory."""


@dataclass(frozen=True, kw_only=True)
class ConflictDecision:
    """What the supervisor decided about one contradiction, and why."""

    topic: str
    """The memory topic both findings were posted on."""
    policy: Literal["resolver", "majority", "priority"]
    """The policy that decided."""
    winner: str | None
    """The agent whose finding stands; None when a resolver wrote a synthesis."""
    text: str
    """The finding that stands (or the resolver's synthesis)."""
    reason: str
    """Why, in words, naming the values that decided."""
    agents: tuple[str, str]
    """The two agents in conflict (existing, new)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the agents pair becomes a list."""
        return {**asdict(self), "agents": list(self.agents)}


def decide_priority(topic: str, existing: Finding, new: Finding, role_priority: Sequence[str]) -> ConflictDecision:
    """The finding of the higher-ranked role stands; unranked roles rank last; a tie keeps the existing one."""
    rank = {role: i for i, role in enumerate(role_priority)}
    r_old, r_new = rank.get(existing.role, len(rank)), rank.get(new.role, len(rank))
    win, lose = (new, existing) if r_new < r_old else (existing, new)
    if r_new == r_old:
        reason = (f"roles {existing.role!r} and {new.role!r} rank equally in role_priority {list(role_priority)}; "
                  f"the earlier finding by {existing.agent!r} stands")
    else:
        reason = (f"role {win.role!r} ranks above {lose.role!r} in role_priority {list(role_priority)}")
    return ConflictDecision(topic=topic, policy="priority", winner=win.agent, text=win.text, reason=reason,
                            agents=(existing.agent, new.agent))


def decide_majority(topic: str, existing: Finding, new: Finding, sides: Mapping[str, Literal["existing", "new"]],
                    role_priority: Sequence[str]) -> ConflictDecision:
    """The side more agents on the topic agree with stands; a tie falls back to priority by role.

    `sides` maps each agent that posted on the topic to the finding its own posts are closer to;
    the two conflicting agents count for their own side.
    """
    votes = dict(sides)
    votes[existing.agent], votes[new.agent] = "existing", "new"
    n_old = sorted(a for a, s in votes.items() if s == "existing")
    n_new = sorted(a for a, s in votes.items() if s == "new")
    if len(n_old) == len(n_new):
        tie = decide_priority(topic, existing, new, role_priority)
        return ConflictDecision(topic=topic, policy="majority", winner=tie.winner, text=tie.text,
                                reason=f"tie {len(n_old)}-{len(n_new)} ({n_old} vs {n_new}); by priority: {tie.reason}",
                                agents=tie.agents)
    win, for_w, against = (existing, n_old, n_new) if len(n_old) > len(n_new) else (new, n_new, n_old)
    return ConflictDecision(topic=topic, policy="majority", winner=win.agent, text=win.text,
                            reason=f"{len(for_w)} agents {for_w} against {len(against)} {against}",
                            agents=(existing.agent, new.agent))


def resolver_task(topic: str, existing: Finding, new: Finding) -> str:
    """The task text given to the resolver agent: critique both findings, then write one synthesis."""
    return (f"Two agents disagree on '{topic}'.\n"
            f"Finding A ({existing.agent}, {existing.role}): {existing.text}\n"
            f"Finding B ({new.agent}, {new.role}): {new.text}\n"
            "Critique both in one sentence each, then write one corrected finding that the team should keep.")


def decide_resolver(topic: str, existing: Finding, new: Finding, *, resolver: str, synthesis: str) -> ConflictDecision:
    return ConflictDecision(topic=topic, policy="resolver", winner=None, text=synthesis,
                            reason=f"resolver agent {resolver!r} critiqued both findings and wrote a synthesis",
                            agents=(existing.agent, new.agent))


def assign_sides(scores: Mapping[str, tuple[float, float]]) -> dict[str, Literal["existing", "new"]]:
    """Each agent's side, from (similarity to the existing finding, similarity to the new one) of its post.

    An agent whose post is exactly as close to both takes no side."""
    out: dict[str, Literal["existing", "new"]] = {}
    for agent, (s_existing, s_new) in scores.items():
        if s_existing != s_new:
            out[agent] = "existing" if s_existing > s_new else "new"
    return out
