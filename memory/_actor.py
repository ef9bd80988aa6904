"""MemoryActor: the Ray shell around MemoryStore. Embeds, publishes events, runs contradiction checks.

Store calls are synchronous and run on the actor's event loop, so each is atomic with respect to the
others; only embedding (in a thread) and judge calls (in background tasks) await.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from typing import Any

import ray
from pydantic import ValidationError

from controlplane.errors import SpecError
from memory._acl import SUPERVISOR
from controlplane.config.memory import MemoryConfig
from memory._contradictions import Judge, RouterJudge, select_candidates
from memory._embed import Embedder
from memory._store import MemoryStore
from memory._types import CONFLICT_TOPIC, Conflict, Entry, Hit, NewEntry, PostEvent, Receipt, SearchFilters

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1)
class MemoryActor:
    """One mission's shared memory. Start with `start_memory_actor` (or `.options(name=...).remote(config)`)."""

    def __init__(self, config: MemoryConfig, judge: Judge | None = None) -> None:
        import faiss
        import torch

        threads = config.cpu_threads or os.cpu_count() or 1
        faiss.omp_set_num_threads(threads)
        torch.set_num_threads(threads)
        self._config = config
        self._embedder = Embedder(model_path=config.embedding_model_path, batch_size=config.embedding_batch_size)
        self._store = MemoryStore(config, dim=self._embedder.dim)
        self._judge = judge or (RouterJudge(model=config.judge_model, app_name=config.app_name,
                                            max_tokens=config.judge_max_tokens, timeout_s=config.judge_timeout_s)
                                if config.judge_model else None)
        self._subscribers = self._restore_subscribers()
        self._tasks: set[asyncio.Task] = set()

    def _restore_subscribers(self) -> dict[str, Any]:
        """The logged subscribers' handles. One that no longer unpickles (its actor lived in an earlier
        cluster, e.g. a data_dir reused across runs) is dropped for good rather than failing the start."""
        restored = {}
        for key, sub in list(self._store.subscriptions.items()):
            try:
                restored[key] = ray.cloudpickle.loads(base64.b64decode(sub["blob"]))
            except Exception:
                logger.warning("memory subscription %s belongs to a cluster that is gone; dropping it", key)
                self._store.unsubscribe(key)
        return restored

    async def grant(self, agent_id: str, read: list[str], write: list[str]) -> None:
        """Grant an agent namespaces to read and write. The supervisor reads everything without a grant."""
        self._store.grant(agent_id, list(read), list(write))

    async def post(self, entries: list[NewEntry | dict], *, as_agent: str, vectors: Any = None) -> list[Receipt]:
        """Store entries atomically; the receipts come back once the write is durable.

        `vectors` (n x dim unit vectors) replaces the embedding of the texts, for callers with their own."""
        parsed = [_parse(NewEntry, e, f"memory.post: entries[{n}]") for n, e in enumerate(entries)]
        if not parsed:
            return []
        self._store.check_post(parsed, as_agent=as_agent)
        if vectors is None:
            vectors = await asyncio.to_thread(self._embedder.encode, [e.text for e in parsed])
        stored = self._store.post(parsed, vectors, as_agent=as_agent, now_s=time.time())
        for entry in stored:
            self._publish(entry.topic, PostEvent(topic=entry.topic, entry=entry), entry.namespace)
        if self._judge is not None and self._config.max_judge_calls_per_post > 0:
            self._spawn(self._check_conflicts(stored))
        return [Receipt(id=e.id, version=e.version) for e in stored]

    async def search(self, queries: str | list[str], *, k: int = 5, namespace: str, as_agent: str,
                     filters: SearchFilters | dict | None = None) -> list[list[Hit]]:
        """Top-k hits per query text (one list per query, also for a single string), best first."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts:
            raise SpecError(where="memory.search: queries", value=queries, why="there are no queries",
                            fix="pass a string or a non-empty list of strings")
        for n, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise SpecError(where=f"memory.search: queries[{n}]", value=text, why="a query must be non-empty text",
                                fix="pass non-empty strings")
        self._store.check_search(k=k, namespace=namespace, as_agent=as_agent)
        vectors = await asyncio.to_thread(self._embedder.encode, texts)
        return self._store.search(vectors, k=k, namespace=namespace, as_agent=as_agent,
                                  filters=_filters(filters), now_s=time.time())

    async def search_vectors(self, vectors: Any, *, k: int = 5, namespace: str, as_agent: str,
                             filters: SearchFilters | dict | None = None) -> list[list[Hit]]:
        """Top-k hits per query vector ((n, dim) unit vectors; numpy arrays travel zero-copy)."""
        return self._store.search(vectors, k=k, namespace=namespace, as_agent=as_agent,
                                  filters=_filters(filters), now_s=time.time())

    async def get(self, entry_id: int, *, as_agent: str) -> Entry | None:
        """The entry, or None when it was never written, was deleted or has expired."""
        return self._store.get(entry_id, as_agent=as_agent, now_s=time.time())

    async def list(self, *, namespace: str, as_agent: str, filters: SearchFilters | dict | None = None,
                   limit: int = 100) -> list[Entry]:
        """A namespace's entries, oldest first."""
        return self._store.list_entries(namespace=namespace, as_agent=as_agent, filters=_filters(filters),
                                        limit=limit, now_s=time.time())

    async def delete(self, ids: list[int], *, as_agent: str) -> int:
        """Delete entries (all or none; the agent must be able to write each one's namespace)."""
        return self._store.delete(list(ids), as_agent=as_agent, now_s=time.time())

    async def subscribe(self, subscriber: Any, topics: list[str], *, as_agent: str = SUPERVISOR) -> str:
        """Push `PostEvent`s on these topics ('*' = every topic but 'conflicts') to
        `subscriber.on_memory_event.remote(event)`, limited to namespaces `as_agent` may read. Idempotent per
        subscriber (a new call replaces its topics); survives a restart of this actor. Returns the key."""
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise SpecError(where="memory.subscribe: topics", value=topics, why="topics must be non-empty strings",
                            fix="pass e.g. ['findings', 'conflicts'] or ['*']")
        key = subscriber._actor_id.hex()
        self._store.subscribe(key, topics, as_agent, base64.b64encode(ray.cloudpickle.dumps(subscriber)).decode())
        self._subscribers[key] = subscriber
        return key

    async def unsubscribe(self, key: str) -> None:
        self._store.unsubscribe(key)
        self._subscribers.pop(key, None)

    async def snapshot(self) -> None:
        """Write a snapshot now (it also happens every `snapshot_every_writes` writes)."""
        self._store.snapshot()

    async def stats(self) -> dict[str, Any]:
        """Entries, index kinds, denials, judge counters, pending background work, and where the actor runs."""
        return {**self._store.stats(), "pending_tasks": len(self._tasks), "pid": os.getpid(),
                "device": self._embedder.device, "gpu_ids": ray.get_runtime_context().get_accelerator_ids().get("GPU", [])}

    def _publish(self, topic: str, event: PostEvent | Conflict, *namespaces: str) -> None:
        for key, sub in list(self._store.subscriptions.items()):
            wanted = topic in sub["topics"] or ("*" in sub["topics"] and topic != CONFLICT_TOPIC)
            if wanted and all(self._store.readable_by(sub["as_agent"], ns) for ns in namespaces):
                self._spawn(self._deliver(key, event))

    async def _deliver(self, key: str, event: PostEvent | Conflict) -> None:
        subscriber = self._subscribers.get(key)
        if subscriber is None:
            return
        try:
            await subscriber.on_memory_event.remote(event)
        except ray.exceptions.RayActorError:
            logger.warning("memory subscriber %s is gone; dropping its subscription", key)
            await self.unsubscribe(key)
        except Exception:
            logger.exception("memory subscriber %s failed on a %s event", key, event.kind)

    async def _check_conflicts(self, stored: list[Entry]) -> None:
        counters = self._store.counters
        for entry in stored:
            candidates = select_candidates(entry, self._store.topic_neighbours(entry),
                                           threshold=self._config.conflict_similarity,
                                           limit=self._config.max_judge_calls_per_post)
            counters["prefilter_passed" if candidates else "prefilter_skipped"] += 1
            for similarity, existing in candidates:
                try:
                    verdict = await self._judge.judge(entry, existing)
                except Exception:
                    counters["judge_errors"] += 1
                    logger.exception("memory judge failed on entries %d and %d", entry.id, existing.id)
                    continue
                counters["judge_calls"] += 1
                counters[f"verdict_{verdict}"] += 1
                if verdict == "contradict":
                    counters["conflicts"] += 1
                    conflict = Conflict(topic=entry.topic, new=entry, existing=existing,
                                        similarity=similarity, verdict=verdict)
                    self._publish(CONFLICT_TOPIC, conflict, entry.namespace, existing.namespace)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def start_memory_actor(config: MemoryConfig, *, mission_id: str, judge: Judge | None = None,
                       namespace: str | None = None, resources: dict[str, float] | None = None) -> Any:
    """Start (or find) the mission's memory actor, named f"{mission_id}:memory", with the config's GPU share
    and restart policy, in Ray namespace `namespace` (None: the driver's); `resources` are custom resources it
    asks for (e.g. the head pin)."""
    if config.data_dir is None:
        raise SpecError(where="memory.data_dir", value=None, why="the memory actor needs a place for its log",
                        fix="set data_dir to a directory or an fsspec URL")
    return MemoryActor.options(
        name=f"{mission_id}:memory", namespace=namespace, get_if_exists=True,
        num_gpus=config.num_gpus, max_restarts=config.max_restarts, resources=resources or None,
    ).remote(config, judge)


def _parse(model: type, value: Any, where: str) -> Any:
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise SpecError.from_validation(exc, where=f"{where}.", fix=f"pass a valid {model.__name__}") from None


def _filters(filters: SearchFilters | dict | None) -> SearchFilters | None:
    return None if filters is None else _parse(SearchFilters, filters, "memory: filters")
