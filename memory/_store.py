"""MemoryStore: the memory bus without Ray. Entries, per-namespace indexes, ACL, TTL and durability.

Every change is a log record: it is validated first, appended and fsynced, and only then applied, so
a failed call leaves nothing behind and recovery replays exactly what was acknowledged. Methods take
the time as `now_s`; expired entries are deleted (and the deletion logged) at the start of each call.
"""

from __future__ import annotations

import base64
import heapq
import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

import numpy as np

from controlplane.config.memory import MemoryConfig
from controlplane.errors import AccessDenied, SpecError
from memory._acl import SUPERVISOR, AccessControl
from memory._checks import (
    check_entries,
    check_id,
    check_ids,
    check_k,
    check_limit,
    check_min_score,
    check_names,
    check_namespace,
    check_vectors,
)
from memory._durable import Durable
from memory._filters import attrs_of
from memory._index import NamespaceIndex
from memory._types import Entry, Hit, NewEntry, Receipt, SearchFilters

logger = logging.getLogger(__name__)
_GONE = SimpleNamespace(mission_id=None, agent_id=None, topic=None, task_id=None, created_at_s=float("nan"))
"""Filter attributes of a dead row (its entry was deleted): it is never searched anyway."""


class MemoryStore:
    """One mission's memory. Not thread-safe: the actor calls it from its event loop only."""

    def __init__(self, config: MemoryConfig, *, dim: int) -> None:
        self.config = config
        self.dim = dim
        self.acl = AccessControl()
        self.entries: dict[int, Entry] = {}
        self.indexes: dict[str, NamespaceIndex] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.counters: Counter[str] = Counter()
        self._by_topic: dict[tuple[str, str], set[int]] = {}
        self._expiry: list[tuple[float, int]] = []
        self._posted: dict[str, Receipt] = {}  # idempotency key -> first receipt; kept after a delete
        self._seq = 0
        self._next_id = 1
        self._since_snapshot = 0
        if config.data_dir is None:
            raise SpecError(where="memory.data_dir", value=None, why="the memory store needs a place for its log",
                            fix="set data_dir to a directory or an fsspec URL")
        self._durable = Durable(config.data_dir)
        self._recover()

    # ---- writes -------------------------------------------------------------------------------

    def grant(self, agent_id: str, read: list[str], write: list[str]) -> None:
        """Give an agent read and write namespaces (replacing earlier grants); names become known namespaces."""
        example = "['shared']"
        read = check_names(read, where=f"memory.grant({agent_id!r}): read", example=example)
        write = check_names(write, where=f"memory.grant({agent_id!r}): write", example=example)
        for name in [*read, *write]:
            if not name or name == "*":
                raise SpecError(where=f"memory.grant({agent_id!r})", value=name, why="it is not a namespace name",
                                fix="grant non-empty namespace names other than '*' (the supervisor reads all)")
        self._commit({"op": "grant", "agent_id": agent_id, "read": sorted(read), "write": sorted(write)})

    def check_post(self, entries: list[NewEntry], *, as_agent: str) -> None:
        """Everything `post` checks before the (costly) embedding: sizes, namespaces, access."""
        check_entries(entries, self.config, self.known_namespaces())
        for entry in entries:
            if as_agent == SUPERVISOR:
                continue  # the supervisor holds the mission secret: it may write for any agent, anywhere
            if entry.agent_id != as_agent:
                self.acl.denials[(as_agent, "post-as", entry.agent_id)] += 1
                raise AccessDenied(agent=as_agent, resource=f"post as agent {entry.agent_id!r}", granted=[as_agent])
            self.acl.check_write(as_agent, entry.namespace)

    def post(self, entries: list[NewEntry], vectors: object, *, as_agent: str, now_s: float) -> list[Entry]:
        """Store all new entries with their vectors, or none. Returns the newly stored entries: an entry whose
        `idempotency_key` was stored before (or earlier in this post) is not stored again; see `receipts`."""
        self.expire(now_s)
        if not entries:
            return []
        self.check_post(entries, as_agent=as_agent)
        array = check_vectors(vectors, self.dim, where="memory.post: vectors", rows=len(entries),
                              max_rows=self.config.max_batch)
        rows = self._new_rows(entries)
        if not rows:
            return []
        stored = [
            Entry(**entry.model_dump(), id=self._next_id + n, version=self._seq + 1, created_at_s=now_s,
                  expires_at_s=None if entry.ttl_s is None else now_s + entry.ttl_s)
            for n, entry in enumerate(entries[row] for row in rows)
        ]
        self._commit({"op": "post", "entries": [e.model_dump() for e in stored],
                      "vectors": base64.b64encode(array[rows].tobytes()).decode()})
        return stored

    def receipts(self, entries: list[NewEntry], stored: list[Entry]) -> list[Receipt]:
        """One receipt per posted entry, in order: for a keyed entry the receipt of the key's first post."""
        unkeyed = iter(e for e in stored if e.idempotency_key is None)
        out = []
        for entry in entries:
            if entry.idempotency_key is not None:
                out.append(self._posted[entry.idempotency_key])
            else:
                new = next(unkeyed)
                out.append(Receipt(id=new.id, version=new.version))
        return out

    def _new_rows(self, entries: list[NewEntry]) -> list[int]:
        rows, keys = [], set()
        for row, entry in enumerate(entries):
            key = entry.idempotency_key
            if key is None or (key not in self._posted and key not in keys):
                rows.append(row)
                if key is not None:
                    keys.add(key)
        return rows

    def delete(self, ids: list[int], *, as_agent: str, now_s: float) -> int:
        """Delete entries the agent may write; all or none. Returns how many existed."""
        ids = check_ids(ids, where="memory.delete: ids")
        self.expire(now_s)
        present = [i for i in ids if i in self.entries]
        for entry_id in present:
            self.acl.check_write(as_agent, self.entries[entry_id].namespace)
        if present:
            self._commit({"op": "delete", "ids": present, "reason": "delete"})
        return len(present)

    def supersede(self, ids: list[int], *, by: int, now_s: float) -> list[int]:
        """Mark entries as replaced by entry `by` (a conflict decision): they leave search, list and conflict
        checks; `get` returns them with `superseded_by`. Returns the ids that were live and are now superseded."""
        ids, by = check_ids(ids, where="memory.supersede: ids"), check_id(by, where="memory.supersede: by")
        self.expire(now_s)
        if by not in self.entries:
            raise SpecError(where="memory.supersede: by", value=by, why="no live entry has this id",
                            fix="pass the id of the entry that stands (the winner, or the posted synthesis)")
        live = [i for i in ids if i in self.entries and i != by and self.entries[i].superseded_by is None]
        if live:
            self._commit({"op": "supersede", "ids": live, "by": by})
        return live

    def expire(self, now_s: float) -> list[int]:
        """Delete every entry whose TTL has run out by `now_s`; returns their ids."""
        due = []
        while self._expiry and self._expiry[0][0] <= now_s:
            _, entry_id = heapq.heappop(self._expiry)
            if entry_id in self.entries:
                due.append(entry_id)
        if due:
            self._commit({"op": "delete", "ids": due, "reason": "expired"})
        return due

    def subscribe(self, key: str, topics: list[str], as_agent: str, *, actor: str, namespace: str) -> None:
        """Record a subscription by the subscriber's actor name (never a pickled handle), so it survives a
        restart: the actor looks the name up again."""
        self._commit({"op": "subscribe", "key": key, "topics": sorted(topics), "as_agent": as_agent,
                      "actor": actor, "namespace": namespace})

    def unsubscribe(self, key: str) -> None:
        if key in self.subscriptions:
            self._commit({"op": "unsubscribe", "key": key})

    def snapshot(self) -> None:
        """Write a snapshot now and start a new log segment."""
        state = {"seq": self._seq, "next_id": self._next_id, "acl": self.acl.state(),
                 "entries": [e.model_dump() for e in self.entries.values()],
                 "index_state": {ns: index.state() for ns, index in self.indexes.items()},
                 "subscriptions": self.subscriptions,
                 "posted": {key: [r.id, r.version] for key, r in self._posted.items()}}
        self._durable.write_snapshot(self._seq, state, {ns: index.index for ns, index in self.indexes.items()})
        self._since_snapshot = 0

    def close(self) -> None:
        self._durable.close()

    # ---- reads --------------------------------------------------------------------------------

    def known_namespaces(self) -> set[str]:
        return set(self.config.namespaces) | self.acl.namespaces()

    def check_search(self, *, k: int, namespace: str, as_agent: str, min_score: float | None = None) -> None:
        """Everything `search` checks before the queries are embedded."""
        check_k(k, self.config)
        check_min_score(min_score)
        check_namespace(namespace, self.known_namespaces(), where="memory.search: namespace")
        self.acl.check_read(as_agent, namespace)

    def search(self, queries: object, *, k: int, namespace: str, as_agent: str,
               filters: SearchFilters | None, now_s: float, min_score: float | None = None) -> list[list[Hit]]:
        """Top-k hits per query vector in one namespace, best first; with `min_score`, only those whose cosine
        similarity to the query reaches it."""
        self.check_search(k=k, namespace=namespace, as_agent=as_agent, min_score=min_score)
        array = check_vectors(queries, self.dim, where="memory.search: queries", max_rows=self.config.max_batch)
        self.expire(now_s)
        index = self.indexes.get(namespace)
        if index is None:
            return [[] for _ in range(len(array))]
        results = index.search(array, k, where=filters)  # the filter runs inside FAISS, over row attributes
        floor = -np.inf if min_score is None else min_score
        return [[Hit(score=score, entry=self.entries[i]) for score, i in hits if score >= floor] for hits in results]

    def get(self, entry_id: int, *, as_agent: str, now_s: float) -> Entry | None:
        """The entry, or None when it does not exist (never written, deleted or expired)."""
        entry_id = check_id(entry_id, where="memory.get: entry_id")
        self.expire(now_s)
        entry = self.entries.get(entry_id)
        if entry is not None:
            self.acl.check_read(as_agent, entry.namespace)
        return entry

    def list_entries(self, *, namespace: str, as_agent: str, filters: SearchFilters | None,
                     limit: int, now_s: float) -> list[Entry]:
        """Entries of a namespace in id order (oldest first), up to `limit`."""
        check_limit(limit)
        check_namespace(namespace, self.known_namespaces(), where="memory.list: namespace")
        self.acl.check_read(as_agent, namespace)
        self.expire(now_s)
        index = self.indexes.get(namespace)
        ids = sorted(index.ids()) if index else []
        chosen = (self.entries[i] for i in ids if filters is None or filters.matches(self.entries[i]))
        return [entry for _, entry in zip(range(limit), chosen)]

    def topic_neighbours(self, entry: Entry) -> list[tuple[float, Entry]]:
        """Cosine of `entry` to every other agent's live entry on its mission and topic, in any namespace."""
        others = sorted(i for i in self._by_topic.get((entry.mission_id, entry.topic), ())
                        if self.entries[i].agent_id != entry.agent_id)
        if not others or entry.id not in self.entries:
            return []
        vector = self.indexes[entry.namespace].vectors_of([entry.id])[0]
        pairs: list[tuple[float, Entry]] = []
        for namespace in sorted({self.entries[i].namespace for i in others}):
            ids = [i for i in others if self.entries[i].namespace == namespace]
            scores = self.indexes[namespace].vectors_of(ids) @ vector
            pairs.extend((float(s), self.entries[i]) for s, i in zip(scores, ids))
        return pairs

    def readable_by(self, agent_id: str, namespace: str) -> bool:
        return self.acl.can_read(agent_id, namespace)

    def stats(self) -> dict[str, Any]:
        """Sizes, index kinds, counters and access denials, for status and the audit trail."""
        return {
            "entries": len(self.entries), "version": self._seq,
            "namespaces": {ns: {"entries": len(ix), "index": ix.kind} for ns, ix in sorted(self.indexes.items())},
            "denials": [{"agent": a, "mode": m, "namespace": ns, "count": c}
                        for (a, m, ns), c in sorted(self.acl.denials.items())],
            **dict(self.counters),
        }

    # ---- log ----------------------------------------------------------------------------------

    def _commit(self, record: dict[str, Any]) -> None:
        record = {"seq": self._seq + 1, **record}
        try:
            self._durable.append(record)
        except BaseException:
            # A half-written line must not sit in front of later records: continue in a fresh segment.
            self._durable.open_segment(self._seq + 1)
            raise
        self._apply(record)
        self._since_snapshot += 1
        if self._since_snapshot >= self.config.snapshot_every_writes:
            try:
                self.snapshot()
            except Exception:
                # The write is already durable in the log; a failed snapshot is retried at the next write.
                logger.exception("memory snapshot at seq %d in %s failed; the log still holds every write",
                                 self._seq, self.config.data_dir)
                self._durable.ensure_open(self._seq + 1)

    def _apply(self, record: dict[str, Any]) -> None:
        self._seq = record["seq"]
        op = record["op"]
        if op == "post":
            vectors = np.frombuffer(base64.b64decode(record["vectors"]), dtype=np.float32).reshape(-1, self.dim)
            self._apply_post([Entry(**e) for e in record["entries"]], vectors)
        elif op == "delete":
            self._apply_delete(record["ids"])
        elif op == "supersede":
            self._apply_supersede(record["ids"], record["by"])
        elif op == "grant":
            self.acl.grant(record["agent_id"], record["read"], record["write"])
        elif op == "subscribe":
            self.subscriptions[record["key"]] = {k: v for k, v in record.items() if k not in ("seq", "op", "key")}
        elif op == "unsubscribe":
            self.subscriptions.pop(record["key"], None)

    def _apply_post(self, entries: list[Entry], vectors: np.ndarray) -> None:
        by_namespace: dict[str, list[int]] = {}
        for row, entry in enumerate(entries):
            self._remember(entry)
            by_namespace.setdefault(entry.namespace, []).append(row)
        for namespace, rows in by_namespace.items():
            ids = np.array([entries[r].id for r in rows], dtype=np.int64)
            self._index(namespace).add(ids, vectors[rows], attrs_of([entries[r] for r in rows]))
        self._next_id = max(self._next_id, max(e.id for e in entries) + 1)

    def _apply_delete(self, ids: list[int]) -> None:
        by_namespace: dict[str, list[int]] = {}
        for entry_id in ids:
            entry = self.entries.pop(entry_id, None)
            if entry is not None:
                by_namespace.setdefault(entry.namespace, []).append(entry_id)
                self._by_topic.get((entry.mission_id, entry.topic), set()).discard(entry_id)
        for namespace, gone in by_namespace.items():
            self.indexes[namespace].remove(gone)

    def _apply_supersede(self, ids: list[int], by: int) -> None:
        by_namespace: dict[str, list[int]] = {}
        for entry_id in ids:
            entry = self.entries[entry_id] = self.entries[entry_id].model_copy(update={"superseded_by": by})
            by_namespace.setdefault(entry.namespace, []).append(entry_id)
            self._by_topic.get((entry.mission_id, entry.topic), set()).discard(entry_id)
        for namespace, gone in by_namespace.items():
            self.indexes[namespace].remove(gone)

    def _remember(self, entry: Entry) -> None:
        self.entries[entry.id] = entry
        if entry.idempotency_key is not None:
            self._posted.setdefault(entry.idempotency_key, Receipt(id=entry.id, version=entry.version))
        if entry.superseded_by is None:
            self._by_topic.setdefault((entry.mission_id, entry.topic), set()).add(entry.id)
        if entry.expires_at_s is not None:
            heapq.heappush(self._expiry, (entry.expires_at_s, entry.id))

    def _index(self, namespace: str) -> NamespaceIndex:
        if namespace not in self.indexes:
            self.indexes[namespace] = NamespaceIndex(
                self.dim, exact_below=self.config.exact_below, hnsw_m=self.config.hnsw_m,
                hnsw_ef_search=self.config.hnsw_ef_search, large=self.config.large_index,
                ivf_nprobe=self.config.ivf_nprobe)
        return self.indexes[namespace]

    def _recover(self) -> None:
        snapshot, records = self._durable.load()
        if snapshot is not None:
            state = snapshot.state
            self._seq, self._next_id = state["seq"], state["next_id"]
            self.acl.restore(state["acl"])
            self.subscriptions = state["subscriptions"]
            self._posted = {key: Receipt(id=i, version=v) for key, (i, v) in state.get("posted", {}).items()}
            for data in state["entries"]:
                self._remember(Entry(**data))
            for namespace, index_state in state["index_state"].items():
                rows = [self.entries.get(int(i)) or _GONE for i in index_state["ids"]]
                self._index(namespace).restore(snapshot.indexes[namespace], index_state, attrs_of(rows))
        for record in records:
            self._apply(record)
        self._durable.open_segment(self._seq + 1)
        if snapshot is not None or records:
            logger.info("memory recovered %d entries from %s (snapshot at %d, %d log records)",
                        len(self.entries), self.config.data_dir, snapshot.seq if snapshot else 0, len(records))
