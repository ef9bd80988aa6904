"""memory: the agents' shared context bus. A FAISS-backed Ray actor per mission with post, search,
subscribe, per-agent namespaces, durable writes and contradiction detection. `MemoryReader` searches it over a
direct channel that skips Ray's round trip."""

from controlplane.config.memory import MemoryConfig
from memory._actor import MemoryActor, start_memory_actor
from memory._channel import MemoryReader
from memory._contradictions import Judge, RouterJudge
from memory._types import CONFLICT_TOPIC, Conflict, Entry, Hit, NewEntry, PostEvent, Receipt, SearchFilters, Verdict

__all__ = [
    "CONFLICT_TOPIC",
    "Conflict",
    "Entry",
    "Hit",
    "Judge",
    "MemoryActor",
    "MemoryConfig",
    "MemoryReader",
    "NewEntry",
    "PostEvent",
    "Receipt",
    "RouterJudge",
    "SearchFilters",
    "Verdict",
    "start_memory_actor",
]
