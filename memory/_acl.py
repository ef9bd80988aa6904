"""Who may read and write which namespace. The supervisor reads everything; denials are counted."""

from __future__ import annotations

from collections import Counter

from controlplane._core.identity import RESERVED_AGENT_NAMES, Claims
from controlplane.errors import AccessDenied, ScopeDenied

SUPERVISOR = "supervisor"


def principal_of(claims: Claims) -> str:
    """The ACL name of a verified token's bearer: a supervisor-role token reads as the supervisor (everything);
    an agent token as its agent, which may never carry a control-plane name."""
    if claims.role == "supervisor":
        return SUPERVISOR
    if claims.agent_id in RESERVED_AGENT_NAMES:
        raise ScopeDenied(why=f"an agent token names {claims.agent_id!r}, a control-plane identity",
                          fix="mint agents' tokens with MissionTokens.agent, which refuses reserved names")
    return claims.agent_id


class AccessControl:
    """Grants per agent. An agent with no grant may do nothing."""

    def __init__(self) -> None:
        self._read: dict[str, set[str]] = {}
        self._write: dict[str, set[str]] = {}
        self.denials: Counter[tuple[str, str, str]] = Counter()
        """(agent, mode, namespace) -> number of denied calls, for the audit trail."""

    def grant(self, agent_id: str, read: list[str], write: list[str]) -> None:
        """Replace the agent's grants. Writing a namespace implies reading it."""
        self._write[agent_id] = set(write)
        self._read[agent_id] = set(read) | set(write)

    def namespaces(self) -> set[str]:
        """Every namespace named in any grant."""
        return set().union(*self._read.values()) if self._read else set()

    def can_read(self, agent_id: str, namespace: str) -> bool:
        return agent_id == SUPERVISOR or namespace in self._read.get(agent_id, ())

    def can_write(self, agent_id: str, namespace: str) -> bool:
        return namespace in self._write.get(agent_id, ())

    def check_read(self, agent_id: str, namespace: str) -> None:
        """Raise AccessDenied (and count it) unless the agent may read the namespace."""
        if not self.can_read(agent_id, namespace):
            self._deny(agent_id, "read", namespace, self._read.get(agent_id, set()))

    def check_write(self, agent_id: str, namespace: str) -> None:
        """Raise AccessDenied (and count it) unless the agent may write the namespace."""
        if not self.can_write(agent_id, namespace):
            self._deny(agent_id, "write", namespace, self._write.get(agent_id, set()))

    def state(self) -> dict[str, dict[str, list[str]]]:
        return {agent: {"read": sorted(self._read[agent]), "write": sorted(self._write[agent])} for agent in self._read}

    def restore(self, state: dict[str, dict[str, list[str]]]) -> None:
        for agent, grants in state.items():
            self.grant(agent, grants["read"], grants["write"])

    def _deny(self, agent_id: str, mode: str, namespace: str, granted: set[str]) -> None:
        self.denials[(agent_id, mode, namespace)] += 1
        raise AccessDenied(agent=agent_id, resource=f"{mode} namespace {namespace!r}", granted=sorted(granted))
