"""MemoryActor: the Ray shell around MemoryStore. Embeds, publishes events, runs contradiction checks.

Store calls are synchronous and run on the actor's event loop, so each is atomic with respect to the
others; only embedding (in a thread) and judge calls (in background tasks) await.

Every call carries a capability token of the actor's mission. The caller's identity is the token's, never an
argument: an agent acts as itself, a supervisor-role token as the supervisor (which reads every namespace and
alone may grant). Which namespaces an agent may read and write is the ACL its supervisor granted.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import time
from typing import Any

import ray
from pydantic import ValidationError

from controlplane._core.identity import (
    RESERVED_AGENT_NAMES,
    Claims,
    MissionTokens,
    TokenVerifier,
    mission_key,
    require_mission,
    require_supervisor,
)
from controlplane._priority import run_at_normal_priority
from controlplane.config.memory import MemoryConfig
from controlplane.errors import AccessDenied, IdentityError, ScopeDenied, SpecError
from memory._acl import SUPERVISOR, principal_of
from memory._channel import READ_METHODS, ReadServer
from memory._checks import check_names
from memory._contradictions import Judge, RouterJudge, select_candidates
from memory._embed import Embedder
from memory._store import MemoryStore
from memory._types import CONFLICT_TOPIC, Conflict, Entry, Hit, NewEntry, PostEvent, Receipt, SearchFilters
from serving._secrets import load_or_create_root_secret, secret_file_env

logger = logging.getLogger(__name__)
JUDGE_TOKEN_MARGIN_S = 60.0


@ray.remote(num_cpus=0, max_restarts=-1)
class MemoryActor:
    """One mission's shared memory. Start with `start_memory_actor` (or `.options(name=...).remote(config)`)."""

    def __init__(self, config: MemoryConfig, judge: Judge | None = None, *, mission_id: str) -> None:
        import faiss

        run_at_normal_priority()  # before FAISS and torch start their thread pools, which inherit it

        threads = config.cpu_threads or os.cpu_count() or 1
        faiss.omp_set_num_threads(threads)
        self._config = config
        self.mission_id = mission_id
        self._root = load_or_create_root_secret()
        self._tokens = TokenVerifier(self._root)
        self._embedder = Embedder(model_path=config.embedding_model_path, batch_size=config.embedding_batch_size,
                                  threads=threads)
        self._store = MemoryStore(config, dim=self._embedder.dim)
        self._judge = judge or (RouterJudge(model=config.judge_model, app_name=config.app_name,
                                            max_tokens=config.judge_max_tokens, timeout_s=config.judge_timeout_s,
                                            token=self._judge_token)
                                if config.judge_model else None)
        self._subscribers = self._restore_subscribers()
        self._tasks: set[asyncio.Task] = set()
        self._read_server = ReadServer({name: getattr(self, name) for name in READ_METHODS})

    def _restore_subscribers(self) -> dict[str, Any]:
        """Handles of the logged subscribers, looked up by actor name. One whose actor is gone (e.g. it lived in
        an earlier cluster that used this data_dir), or logged by an old version as a pickled handle, is dropped
        for good rather than failing the start."""
        restored = {}
        for key, sub in list(self._store.subscriptions.items()):
            handle = _lookup(sub.get("actor"), sub.get("namespace"))
            if handle is None:
                logger.warning("memory subscriber %s is gone (or was logged as a pickle); dropping it", key)
                self._store.unsubscribe(key)
            else:
                restored[key] = handle
        return restored

    def _verified(self, token: str) -> Claims:
        """The claims of a token of this actor's mission; IdentityError (counted) otherwise."""
        try:
            claims = self._tokens.verify(token, now_s=time.time())
            require_mission(claims, self.mission_id)
        except IdentityError:
            self._store.counters["identity_refused"] += 1
            raise
        return claims

    def _caller(self, token: str) -> str:
        """The ACL name of the token's bearer."""
        claims = self._verified(token)
        try:
            return principal_of(claims)
        except ScopeDenied:
            self._store.counters["identity_refused"] += 1
            raise

    def _judge_token(self) -> str:
        """The memory judge's own control-plane identity, minted per judge call."""
        tokens = MissionTokens(mission_key(self._root, self.mission_id), self.mission_id)
        return tokens.control("memory-judge", now_s=time.time(),
                              ttl_s=self._config.judge_timeout_s + JUDGE_TOKEN_MARGIN_S)

    async def grant(self, agent_id: str, read: list[str], write: list[str], *, token: str) -> None:
        """Grant an agent namespaces to read and write (replacing its earlier grant). Only the mission's
        supervisor may; the supervisor reads everything without a grant."""
        require_supervisor(self._verified(token), action="memory.grant")
        if agent_id in RESERVED_AGENT_NAMES:
            raise SpecError(where="memory.grant: agent_id", value=agent_id, why="it is a control-plane identity",
                            fix="grant namespaces to the mission's agents")
        self._store.grant(agent_id, read, write)

    async def post(self, entries: list[NewEntry | dict], *, token: str, vectors: Any = None,
                   settle_checks: bool = False) -> list[Receipt]:
        """Store entries atomically; the receipts come back once the write is durable. Each entry's agent and
        mission must be the token's (a supervisor token may post for any of the mission's agents; its posts are
        decisions, never checked for contradictions).

        `vectors` (n x dim unit vectors) replaces the embedding of the texts, for callers with their own.
        `settle_checks`: the receipts wait for the entries' contradiction checks, and for the delivery of any
        conflict they raise, so the supervisor knows of a conflict before the poster's task ends."""
        as_agent = self._caller(token)
        if not isinstance(entries, list | tuple):
            raise SpecError(where="memory.post: entries", value=type(entries).__name__,
                            why="it must be a list of NewEntry (or dicts of their fields)", fix="pass [entry]")
        parsed = [_parse(NewEntry, e, f"memory.post: entries[{n}]") for n, e in enumerate(entries)]
        if not parsed:
            return []
        self._check_mission(parsed, as_agent)
        self._store.check_post(parsed, as_agent=as_agent)
        if vectors is None:
            vectors = await asyncio.to_thread(self._embedder.encode, [e.text for e in parsed])
        stored = self._store.post(parsed, vectors, as_agent=as_agent, now_s=time.time())
        for entry in stored:
            self._publish(entry.topic, PostEvent(topic=entry.topic, entry=entry), entry.namespace)
        if self._judge is not None and self._config.max_judge_calls_per_post > 0 and as_agent != SUPERVISOR:
            if settle_checks:
                await self._check_conflicts(stored)
            else:
                self._spawn(self._check_conflicts(stored))
        return self._store.receipts(parsed, stored)

    async def supersede(self, ids: list[int], *, by: int, token: str) -> list[int]:
        """Mark entries as replaced by entry `by` after a conflict decision (see MemoryStore.supersede). Only
        the mission's supervisor may. Returns the ids superseded now."""
        require_supervisor(self._verified(token), action="memory.supersede")
        return self._store.supersede(ids, by=by, now_s=time.time())

    async def search(self, queries: str | list[str], *, k: int = 5, namespace: str, token: str,
                     filters: SearchFilters | dict | None = None, min_score: float | None = None) -> list[list[Hit]]:
        """Top-k hits per query text (one list per query, also for a single string), best first; with
        `min_score`, only hits whose cosine similarity to the query reaches it."""
        as_agent = self._caller(token)
        if not isinstance(queries, str | list | tuple):
            raise SpecError(where="memory.search: queries", value=queries, why="it is neither text nor a list of texts",
                            fix="pass a string or a non-empty list of strings")
        texts = [queries] if isinstance(queries, str) else list(queries)
        if not texts:
            raise SpecError(where="memory.search: queries", value=queries, why="there are no queries",
                            fix="pass a string or a non-empty list of strings")
        for n, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise SpecError(where=f"memory.search: queries[{n}]", value=text, why="a query must be non-empty text",
                                fix="pass non-empty strings")
        self._store.check_search(k=k, namespace=namespace, as_agent=as_agent, min_score=min_score)
        vectors = await asyncio.to_thread(self._embedder.encode, texts)
        return self._store.search(vectors, k=k, namespace=namespace, as_agent=as_agent,
                                  filters=_filters(filters), now_s=time.time(), min_score=min_score)

    async def search_vectors(self, vectors: Any, *, k: int = 5, namespace: str, token: str,
                             filters: SearchFilters | dict | None = None,
                             min_score: float | None = None) -> list[list[Hit]]:
        """Top-k hits per query vector ((n, dim) unit vectors; numpy arrays travel zero-copy); `min_score` as in
        `search`."""
        return self._store.search(vectors, k=k, namespace=namespace, as_agent=self._caller(token),
                                  filters=_filters(filters), now_s=time.time(), min_score=min_score)

    async def read_endpoint(self, *, token: str) -> tuple[str, int, bytes] | None:
        """Where `MemoryReader` connects for searches, and the secret that opens it (memory/_channel.py); None
        when the config turns the channel off. Any token of the mission; every call on the channel still checks
        its own."""
        self._verified(token)
        if not self._config.read_channel:
            return None
        return await self._read_server.start(ray.util.get_node_ip_address())

    async def get(self, entry_id: int, *, token: str) -> Entry | None:
        """The entry, or None when it was never written, was deleted or has expired."""
        return self._store.get(entry_id, as_agent=self._caller(token), now_s=time.time())

    async def list(self, *, namespace: str, token: str, filters: SearchFilters | dict | None = None,
                   limit: int = 100) -> list[Entry]:
        """A namespace's entries, oldest first."""
        return self._store.list_entries(namespace=namespace, as_agent=self._caller(token), filters=_filters(filters),
                                        limit=limit, now_s=time.time())

    async def delete(self, ids: builtins.list[int], *, token: str) -> int:
        """Delete entries (all or none; the agent must be able to write each one's namespace)."""
        return self._store.delete(ids, as_agent=self._caller(token), now_s=time.time())

    async def subscribe(self, actor_name: str, topics: builtins.list[str], *, token: str,
                        namespace: str | None = None) -> str:
        """Push `PostEvent`s on these topics ('*' = every topic but 'conflicts') to the actor named `actor_name`
        (in Ray namespace `namespace`, default this actor's) as `on_memory_event.remote(event)`, limited to the
        namespaces the token's bearer may read. Idempotent per subscriber (a new call replaces its topics);
        survives a restart of this actor (the name is logged, never a pickled handle). Returns the key."""
        as_agent = self._caller(token)
        topics = check_names(topics, where="memory.subscribe: topics", example="['findings', 'conflicts'] or ['*']",
                             empty_ok=False)
        namespace = namespace or ray.get_runtime_context().namespace
        handle = _lookup(actor_name, namespace)
        if handle is None:
            raise SpecError(where="memory.subscribe: actor_name", value=actor_name,
                            why=f"no live actor has this name in Ray namespace {namespace!r}",
                            fix="create the subscriber with .options(name=...) first, and pass its namespace")
        key = f"{namespace}/{actor_name}"
        self._store.subscribe(key, topics, as_agent, actor=actor_name, namespace=namespace)
        self._subscribers[key] = handle
        return key

    async def unsubscribe(self, key: str, *, token: str) -> None:
        """End a subscription: the supervisor's, or the subscriber's own (same bearer)."""
        as_agent = self._caller(token)
        sub = self._store.subscriptions.get(key)
        if sub is not None and as_agent not in (SUPERVISOR, sub["as_agent"]):
            raise AccessDenied(agent=as_agent, resource=f"subscription {key}", granted=[])
        self._drop(key)

    def _drop(self, key: str) -> None:
        self._store.unsubscribe(key)
        self._subscribers.pop(key, None)

    async def snapshot(self, *, token: str) -> None:
        """Write a snapshot now (it also happens every `snapshot_every_writes` writes); the supervisor's call."""
        require_supervisor(self._verified(token), action="memory.snapshot")
        self._store.snapshot()

    async def stats(self, *, token: str) -> dict[str, Any]:
        """Entries, index kinds, denials, refused tokens, judge counters, pending background work, searches
        served on the read channel, and where the actor runs. Any token of the mission."""
        self._verified(token)
        gpu_ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        return {**self._store.stats(), "pending_tasks": len(self._tasks), "pid": os.getpid(),
                "channel_reads": self._read_server.served,
                "device": self._embedder.device, "gpu_ids": gpu_ids}

    def _publish(self, topic: str, event: PostEvent | Conflict, *namespaces: str) -> builtins.list[asyncio.Task]:
        """Deliver the event to each subscriber that may read it, in background tasks (returned)."""
        out = []
        for key, sub in list(self._store.subscriptions.items()):
            wanted = topic in sub["topics"] or ("*" in sub["topics"] and topic != CONFLICT_TOPIC)
            if wanted and all(self._store.readable_by(sub["as_agent"], ns) for ns in namespaces):
                out.append(self._spawn(self._deliver(key, event)))
        return out

    async def _deliver(self, key: str, event: PostEvent | Conflict) -> None:
        subscriber = self._subscribers.get(key)
        if subscriber is None:
            return
        try:
            await subscriber.on_memory_event.remote(event)
        except ray.exceptions.RayActorError:
            logger.warning("memory subscriber %s is gone; dropping its subscription", key)
            self._drop(key)
        except Exception:
            logger.exception("memory subscriber %s failed on a %s event", key, event.kind)

    async def _check_conflicts(self, stored: builtins.list[Entry]) -> None:
        """Judge each entry against its close neighbours; publish each contradiction and wait for its delivery."""
        counters, judge = self._store.counters, self._judge
        deliveries: list[asyncio.Task] = []
        if judge is None:
            return
        for entry in stored:
            candidates = select_candidates(entry, self._store.topic_neighbours(entry),
                                           threshold=self._config.conflict_similarity,
                                           limit=self._config.max_judge_calls_per_post)
            counters["prefilter_passed" if candidates else "prefilter_skipped"] += 1
            for similarity, existing in candidates:
                try:
                    verdict = await judge.judge(entry, existing)
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
                    deliveries += self._publish(CONFLICT_TOPIC, conflict, entry.namespace, existing.namespace)
        if deliveries:
            await asyncio.wait(deliveries)

    def _check_mission(self, entries: builtins.list[NewEntry], as_agent: str) -> None:
        for entry in entries:
            if entry.mission_id != self.mission_id:
                self._store.acl.denials[(as_agent, "post-to-mission", entry.mission_id)] += 1
                raise AccessDenied(agent=as_agent, resource=f"post to mission {entry.mission_id!r}",
                                   granted=[self.mission_id])

    def _spawn(self, coroutine: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def start_memory_actor(config: MemoryConfig, *, mission_id: str, judge: Judge | None = None,
                       namespace: str | None = None, resources: dict[str, float] | None = None,
                       secret_files: dict[str, str] | None = None) -> Any:
    """Start (or find) the mission's memory actor, named f"{mission_id}:memory", with the config's GPU share
    and restart policy, in Ray namespace `namespace` (None: the driver's); `resources` are custom resources it
    asks for (e.g. the head pin). It verifies tokens with the root secret file that `secret_files` names
    (`secret_file_env()` of the process that chose it; default: this process's). Only the path travels."""
    if config.data_dir is None:
        raise SpecError(where="memory.data_dir", value=None, why="the memory actor needs a place for its log",
                        fix="set data_dir to a directory or an fsspec URL")
    env = secret_file_env() if secret_files is None else secret_files
    return MemoryActor.options(  # type: ignore[attr-defined]
        name=f"{mission_id}:memory", namespace=namespace, get_if_exists=True, lifetime="detached",
        num_gpus=config.num_gpus, max_restarts=config.max_restarts, max_task_retries=-1,
        resources=resources or None,
        **({"runtime_env": {"env_vars": env}} if env else {}),
    ).remote(config, judge, mission_id=mission_id)


def _lookup(name: str | None, namespace: str | None) -> Any:
    """The live actor of that name, or None."""
    if not name:
        return None
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def _parse(model: Any, value: Any, where: str) -> Any:
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise SpecError.from_validation(exc, where=f"{where}.", fix=f"pass a valid {model.__name__}",
                                        model=model) from None


def _filters(filters: SearchFilters | dict | None) -> SearchFilters | None:
    return None if filters is None else _parse(SearchFilters, filters, "memory: filters")
