"""The memory bus's data: what agents post, what they get back, and the events it pushes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["agree", "contradict", "unrelated"]
VERDICTS: tuple[str, ...] = ("agree", "contradict", "unrelated")
CONFLICT_TOPIC = "conflicts"
"""Reserved topic on which `Conflict` events are published."""


class NewEntry(BaseModel):
    """One finding, intermediate result or piece of state an agent posts."""

    model_config = ConfigDict(extra="forbid")

    mission_id: str = Field(description="Mission the entry belongs to.")
    agent_id: str = Field(description="Agent that wrote it.")
    task_id: str = Field(default="", description="Task the agent was running, if any.")
    namespace: str = Field(description="Namespace (index) the entry is stored in; must be granted for writing.")
    topic: str = Field(description="Topic subscribers listen on, and that contradiction checks compare within.")
    text: str = Field(description="The content; embedded with all-MiniLM-L6-v2 for search.")
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     description="Free JSON-serialisable data kept with the entry.")
    ttl_s: float | None = Field(default=None, gt=0, description="Seconds until the entry expires; None keeps it.")
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=300,
        description="Makes a retried post safe: a post whose key was stored before stores nothing and gets the "
                    "original receipt, also after a restart. Agents use '<mission>/<task>/<attempt>/post/<n>'.")


class Entry(NewEntry):
    """A stored entry: the posted fields plus what the store assigned."""

    id: int = Field(description="Store-wide unique id.")
    version: int = Field(description="Store write sequence number of the write that stored it; larger is newer.")
    created_at_s: float = Field(description="Unix time the store accepted the entry.")
    expires_at_s: float | None = Field(default=None, description="Unix time it expires, from ttl_s; None never.")
    superseded_by: int | None = Field(
        default=None, description="Id of the entry that replaced it when the supervisor settled a conflict. A "
                                  "superseded entry leaves search, list and conflict checks; `get` still returns it.")


class Receipt(BaseModel):
    """Acknowledgement of one stored entry; the write is durable when the receipt is returned."""

    id: int = Field(description="Id of the stored entry.")
    version: int = Field(description="Write sequence number of the post that stored it.")


class Hit(BaseModel):
    """One search result."""

    score: float = Field(description="Cosine similarity of the query and the entry (inner product of unit vectors).")
    entry: Entry = Field(description="The full stored entry.")


class SearchFilters(BaseModel):
    """Restricts search and list to matching entries. Every set field must match."""

    model_config = ConfigDict(extra="forbid")

    mission_id: str | None = Field(default=None, description="Only this mission's entries.")
    agent_id: str | None = Field(default=None, description="Only this agent's entries.")
    exclude_agent_id: str | None = Field(default=None, description="Leave out this agent's entries.")
    topic: str | None = Field(default=None, description="Only entries on this topic.")
    task_id: str | None = Field(default=None, description="Only entries of this task.")
    exclude_task_ids: list[str] = Field(default_factory=list, description="Leave out these tasks' entries.")
    since_s: float | None = Field(default=None, description="Only entries created at or after this Unix time.")
    until_s: float | None = Field(default=None, description="Only entries created before this Unix time.")

    def matches(self, entry: Entry) -> bool:
        """True when `entry` passes every set filter."""
        return (
            (self.mission_id is None or entry.mission_id == self.mission_id)
            and (self.agent_id is None or entry.agent_id == self.agent_id)
            and (self.exclude_agent_id is None or entry.agent_id != self.exclude_agent_id)
            and (self.topic is None or entry.topic == self.topic)
            and (self.task_id is None or entry.task_id == self.task_id)
            and entry.task_id not in self.exclude_task_ids
            and (self.since_s is None or entry.created_at_s >= self.since_s)
            and (self.until_s is None or entry.created_at_s < self.until_s)
        )


class PostEvent(BaseModel):
    """Pushed to subscribers of `entry.topic` for each new entry."""

    kind: Literal["post"] = "post"
    topic: str = Field(description="The entry's topic.")
    entry: Entry = Field(description="The new entry.")


class Conflict(BaseModel):
    """Pushed on topic `conflicts` when a judge finds a new finding contradicts another agent's."""

    kind: Literal["conflict"] = "conflict"
    topic: str = Field(description="Topic both entries share.")
    new: Entry = Field(description="The entry just posted.")
    existing: Entry = Field(description="The other agent's earlier entry it contradicts.")
    similarity: float = Field(description="Cosine similarity of the two entries.")
    verdict: Verdict = Field(description="The judge's verdict; always 'contradict' on a published conflict.")
