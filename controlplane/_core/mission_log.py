"""The mission log's format: hash-chained records, and the check that finds the first bad one.

One log per mission holds every state transition. It is both the checkpoint the supervisor recovers
from and the audit log. A record is `seq, time_s, actor, kind, data, prev_hash, hash`, where `hash`
is the SHA-256 of the canonical JSON (sorted keys, no spaces) of all the other fields, `prev_hash`
included; the first record's `prev_hash` is `GENESIS_HASH`.

What `verify` catches, and what it cannot:
- an edited record (any field): its own hash no longer matches; if the editor also rewrote that hash,
  the next record's `prev_hash` no longer matches;
- a deleted, inserted or reordered record: the `seq` at that position is not the expected one;
- a truncated tail: only against a head (last seq and hash) kept apart from the log, such as the
  `log.head` file rewritten on every flush, or the head in result.json. Without a head, a log cut
  after any record is a valid shorter log;
- not caught: someone who rewrites the chain from the first change onwards *and* every copy of the
  head. Keep a head where the log's writers cannot reach (result.json copied off the run directory,
  or a printed `audit verify` line) to catch that too.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from controlplane._core.events import Event

FORMAT = 1
GENESIS_HASH = "0" * 64
KIND_PATTERN = re.compile(r"^[a-z_]+\.[a-z_]+$")

# kind -> the data fields a record of that kind must carry (more may be present).
REQUIRED: dict[str, tuple[str, ...]] = {
    "mission.start": ("mission_id", "name", "spec", "format"),
    "mission.status": ("status",),
    "mission.plan": ("tasks",),
    "mission.cancel": ("reason",),
    "task.ready": ("task",),
    "task.dispatch": ("task", "agent", "attempt", "attempt_key"),
    "task.succeeded": ("task", "agent", "attempt", "attempt_key", "output"),
    "task.retry": ("task", "agent", "attempt", "attempt_key", "error", "retry_at_s"),
    "task.fallback": ("task", "agent", "attempt", "attempt_key", "error"),
    "task.failed": ("task", "error"),
    "task.skipped": ("task", "reason"),
    "task.cancelled": ("task", "reason"),
    "task.delegate": ("parent", "task"),
    "conflict.decision": ("topic", "policy", "winner", "text", "reason", "agents"),
    "budget.charge": ("agent", "tokens"),
    "budget.exceeded": ("budget", "limit", "used"),
    "model.call": ("model", "agent", "prompt_tokens", "completion_tokens", "latency_s", "outcome"),
    "tool.intent": ("call_key", "tool", "task", "attempt_key", "call_index", "args_digest", "side_effects",
                    "idempotent"),
    "tool.result": ("call_key", "tool", "outcome", "result_digest", "duration_s"),
    "tool.decision": ("call_key", "tool", "decision", "reason"),
    "acl.denial": ("agent", "resource", "mode"),
    "approval.request": ("id", "call_id", "agent", "tool", "arg_digest", "deadline_s", "status"),
    "approval.decision": ("id", "call_id", "status", "decided_by"),
}

# Records the writer makes durable before `append` returns: each one is acted on at once, outside the log.
COMMIT_KINDS = frozenset({
    "mission.start", "mission.plan", "mission.cancel", "task.succeeded", "task.retry", "task.fallback",
    "task.failed", "task.delegate", "conflict.detected", "conflict.decision", "budget.exceeded", "tool.intent",
    "tool.result", "approval.request", "approval.decision"})
FINAL_MISSION_STATUSES = frozenset({"succeeded", "failed", "cancelled", "budget_exceeded"})


@dataclass(frozen=True, kw_only=True)
class Record:
    """One entry of the mission log."""

    seq: int
    """Position in the log, from 0, without gaps."""
    time_s: float
    """Unix time the writer stamped."""
    actor: str
    """Who acted: `supervisor`, `planner`, an agent name, `router`, `memory`, a person's id."""
    kind: str
    """What happened, `area.event`, e.g. `task.dispatch` (see `REQUIRED`)."""
    data: dict[str, Any]
    """The detail, JSON only."""
    prev_hash: str
    """The previous record's hash (`GENESIS_HASH` for seq 0)."""
    hash: str
    """SHA-256 of the canonical JSON of every other field."""
    line: str | None = field(default=None, compare=False, repr=False)
    """The JSON line as made, so a flush does not serialise the record again."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "line"}

    def to_line(self) -> str:
        """The record as one line of the log file (without the newline); any JSON object of the fields will do."""
        return self.line or canonical(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Record:
        """KeyError or TypeError when a field is missing or of the wrong kind."""
        return cls(seq=int(raw["seq"]), time_s=float(raw["time_s"]), actor=str(raw["actor"]),
                   kind=str(raw["kind"]), data=dict(raw["data"]), prev_hash=str(raw["prev_hash"]),
                   hash=str(raw["hash"]))

    @property
    def commit(self) -> bool:
        """Whether the writer must make this record durable before acting on it."""
        return self.kind in COMMIT_KINDS or (self.kind == "mission.status"
                                             and self.data.get("status") in FINAL_MISSION_STATUSES)


@dataclass(frozen=True, kw_only=True)
class Head:
    """The last record of a log as its writer last saw it: what truncation is checked against."""

    seq: int
    """The last record's seq."""
    hash: str
    """The last record's hash."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, record: Record) -> Head:
        return cls(seq=record.seq, hash=record.hash)


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    """The outcome of `verify`."""

    ok: bool
    """True when the chain is whole (and reaches the expected head, if one was given)."""
    first_bad_seq: int | None
    """The seq of the first record that is wrong or missing; None when ok."""
    reason: str
    """What is wrong, naming the values; "" when ok."""
    records: int = 0
    """Records checked."""


def canonical(value: Any) -> str:
    """JSON with sorted keys and no spaces: the bytes the hash is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(value: Any) -> str:
    """`sha256:<hex>` of a value's canonical JSON: how tool arguments and results appear in the audit."""
    return "sha256:" + hashlib.sha256(canonical(value).encode()).hexdigest()


def record_hash(*, seq: int, time_s: float, actor: str, kind: str, data: Mapping[str, Any], prev_hash: str) -> str:
    body = {"seq": seq, "time_s": time_s, "actor": actor, "kind": kind, "data": data, "prev_hash": prev_hash}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def attempt_key(mission_id: str, task_id: str, attempt: int) -> str:
    """The id of one attempt of a task. A recovered in-flight attempt is dispatched again under the same key,
    so its memory posts (`<key>/post/<n>`) and tool calls (`<key>/call/<n>`) are recognised as repeats."""
    return f"{mission_id}/{task_id}/{attempt}"


def check_kind(kind: str, data: Mapping[str, Any]) -> None:
    """ValueError unless `kind` is well formed and `data` carries the fields its kind requires."""
    if not KIND_PATTERN.match(kind):
        raise ValueError(f"mission log kind {kind!r} is not of the form 'area.event' (lowercase, e.g. 'task.dispatch')")
    missing = [name for name in REQUIRED.get(kind, ()) if name not in data]
    if missing:
        raise ValueError(f"mission log record {kind!r} lacks data fields {missing}; it needs {list(REQUIRED[kind])}")


def make_record(prev: Record | None, *, time_s: float, actor: str, kind: str, data: Mapping[str, Any]) -> Record:
    """The record that follows `prev` (None: the first record). `data` must be JSON (TypeError otherwise)."""
    check_kind(kind, data)
    data_json = canonical(dict(data))
    seq, time_s = (0 if prev is None else prev.seq + 1), float(time_s)
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    # canonical() of the body, spliced from the data's JSON so the data is serialised once
    body = (f'{{"actor":{canonical(actor)},"data":{data_json},"kind":{canonical(kind)},'
            f'"prev_hash":{canonical(prev_hash)},"seq":{seq},"time_s":{canonical(time_s)}}}')
    hash_ = hashlib.sha256(body.encode()).hexdigest()
    # json.loads copies the data: a caller changing its dict later cannot change the record
    return Record(seq=seq, time_s=time_s, actor=actor, kind=kind, data=json.loads(data_json), prev_hash=prev_hash,
                  hash=hash_, line=f'{body[:-1]},"hash":"{hash_}"}}')


def verify(records: Sequence[Record], *, expected_head: Head | None = None) -> VerifyResult:
    """Check the chain from seq 0: each record's seq, hash and link; then that it reaches `expected_head`."""
    prev_hash = GENESIS_HASH
    for position, record in enumerate(records):
        problem = _check_one(position, record, prev_hash)
        if problem is not None:
            return VerifyResult(ok=False, first_bad_seq=position, reason=problem, records=position)
        prev_hash = record.hash
    if expected_head is not None:
        problem = _check_head(records, expected_head)
        if problem is not None:
            first_bad = min(len(records), expected_head.seq)
            return VerifyResult(ok=False, first_bad_seq=first_bad, reason=problem, records=len(records))
    return VerifyResult(ok=True, first_bad_seq=None, reason="", records=len(records))


def _check_one(position: int, record: Record, prev_hash: str) -> str | None:
    if record.seq != position:
        what = "missing (deleted)" if record.seq > position else "out of order or repeated"
        return f"record {position} is {what}: found seq {record.seq} at position {position}"
    expected = record_hash(seq=record.seq, time_s=record.time_s, actor=record.actor, kind=record.kind,
                           data=record.data, prev_hash=record.prev_hash)
    if record.hash != expected:
        return f"record {position} ({record.kind}) was changed: its hash {record.hash[:12]} should be {expected[:12]}"
    if record.prev_hash != prev_hash:
        return (f"record {position} ({record.kind}) does not follow record {position - 1}: prev_hash "
                f"{record.prev_hash[:12]} should be {prev_hash[:12]} (record {position - 1} was changed and "
                "re-hashed, or records were removed before it)")
    return None


def _check_head(records: Sequence[Record], head: Head) -> str | None:
    if len(records) <= head.seq:
        last = records[-1].seq if records else None
        return (f"the log ends at seq {last} but its head says seq {head.seq}: records {len(records)}.."
                f"{head.seq} were cut off (truncated)")
    if records[head.seq].hash != head.hash:
        return (f"record {head.seq} has hash {records[head.seq].hash[:12]} but the head says {head.hash[:12]}: "
                "the log was rewritten from that record or earlier")
    return None


# -- the scheduler's events as records ------------------------------------------------------------------
_EVENT_KINDS = {("task", "running"): "task.dispatch", ("task", "retrying"): "task.retry",
                ("plan", "planned"): "mission.plan", ("conflict", "resolved"): "conflict.decision",
                ("task", "delegated"): "task.delegate"}


# Records that no event made: the supervisor, budget book, and tool journal append them to the log directly.
NOT_EVENTS = frozenset({"mission.start", "mission.cancel", "budget.charge", "model.call", "tool.intent",
                        "tool.result"})
_RECORD_EVENTS = {record_kind: event for event, record_kind in _EVENT_KINDS.items()}


def record_event(record: Record, seq: int) -> Event | None:
    """The event that made this record (`event_record`'s inverse), as number `seq` of the stream; None for a
    record that no event made. A restarted supervisor's stream goes on from these."""
    if record.kind in NOT_EVENTS:
        return None
    data = dict(record.data)
    if record.kind == "mission.status":
        kind, status = "mission", str(data.pop("status"))
    else:
        kind, status = _RECORD_EVENTS.get(record.kind) or tuple(record.kind.split(".", 1))
    task, agent, attempt, message = (data.pop(name, None) for name in ("task", "agent", "attempt", "message"))
    if isinstance(task, dict):  # a delegation's data holds the child's spec under `task`, over its id
        data["task"], task = task, task["id"]
    if task is not None and attempt is not None:
        data.pop("attempt_key", None)
    added = {"task.failed": "error", "task.fallback": "error", "task.skipped": "reason",
             "task.cancelled": "reason"}.get(record.kind)
    if added is not None and data.get(added) == message:
        del data[added]
    return Event(seq=seq, time_s=record.time_s, kind=kind, status=status, task=task, agent=agent, attempt=attempt,
                 message=message or "", data=data)


def event_record(event: Event, *, mission_id: str) -> tuple[str, dict[str, Any]]:
    """The (kind, data) of the log record for one in-memory event (scheduler and supervisor transitions)."""
    kind = "mission.status" if event.kind == "mission" else _EVENT_KINDS.get(
        (event.kind, event.status), f"{event.kind}.{event.status}")
    data: dict[str, Any] = {"status": event.status} if event.kind == "mission" else {}
    for name in ("task", "agent", "attempt", "message"):
        value = getattr(event, name)
        if value not in (None, ""):
            data[name] = value
    if event.task is not None and event.attempt is not None:
        data["attempt_key"] = attempt_key(mission_id, event.task, event.attempt)
    if kind in ("task.failed", "task.fallback") and "error" not in event.data:
        data["error"] = event.message
    if kind in ("task.skipped", "task.cancelled"):
        data["reason"] = event.message
    data.update(event.data)
    return kind, data
