"""The mission log on storage: a writer that appends fsync'd, batched, hash-chained records, and readers.

Layout under the mission's directory (a local path, or any fsspec URL every node can see):

    log/<first seq, 12 digits>-<start ns>.jsonl   one JSON record per line, in seq order
    log.head                                       {"seq": ..., "hash": ...} of the last durable record

A local writer appends to one segment per session (a restarted writer starts a new one, so a line torn
by a crash stays at the end of its own segment). On an fsspec store each flush writes one new object,
which also works where files cannot be appended to (object stores).

Durability bound: a record is flushed (and fsync'd on a local disk) at most `max_delay_s` after it is
appended, or once `max_records` are waiting, whichever is first; a commit record (`Record.commit`: an
attempt's end, a tool call's intent and result, the plan, a final status, ...) is durable before
`append` returns, and with it every record before it. A crash loses at most the non-commit records of
the last `max_delay_s`. `log.head` is rewritten atomically after every flush.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from controlplane._core.events import Event, EventLog
from controlplane._core.mission_log import Head, Record, VerifyResult, event_record, make_record, verify
from controlplane.errors import MissionLogError

logger = logging.getLogger(__name__)
SEGMENTS = "log"
HEAD = "log.head"


class MissionLogWriter:
    """The one writer of a mission's log; continues an existing log after its last record.

    Thread-safe. `append` only chains the record and queues it; one background thread does every write
    and fsync, so a caller never waits for the disk except on a commit record (or `wait_durable`)."""

    def __init__(self, uri: str, *, actor: str = "supervisor", max_records: int = 64, max_delay_s: float = 0.02,
                 clock: Callable[[], float] = time.time) -> None:
        self.uri, self.actor, self.max_records, self.max_delay_s = uri, actor, max_records, max_delay_s
        self._clock = clock
        self.fs, self.root = fsspec.core.url_to_fs(uri)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(_join(self.root, SEGMENTS), exist_ok=True)
        records = read_log(uri)
        result = verify(records)
        if not result.ok:
            raise MissionLogError(uri=uri, seq=result.first_bad_seq, why=result.reason,
                                  fix="keep the log as evidence and start the mission again under a new id")
        self.last: Record | None = records[-1] if records else None
        self.flushes = 0
        self.flush_s = 0.0  # wall time spent in flushes (write, fsync, head), for metrics and the benchmark
        self._durable: Record | None = self.last
        self._pending: list[Record] = []
        self._oldest_s = 0.0
        self._urgent = False
        self._failure: BaseException | None = None
        self._failures = 0
        self._file: Any = None
        self._cond = threading.Condition()
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="mission-log-flusher", daemon=True)
        self._flusher.start()

    @property
    def head(self) -> Head | None:
        """The last durable record's head."""
        return None if self._durable is None else Head.of(self._durable)

    def append(self, kind: str, data: Mapping[str, Any], *, actor: str | None = None, time_s: float | None = None,
               commit: bool | None = None, wait: bool = True) -> Record:
        """Chain one record onto the log. A commit record (`commit`, default: `Record.commit`) is flushed at
        once, and with `wait` this returns only once it is durable (async callers: `wait=False`, then
        `await writer.durable(record)`)."""
        with self._cond:
            if self._closed:
                raise MissionLogError(uri=self.uri, seq=None, why="the writer is closed",
                                      fix="append before closing the writer")
            record = make_record(self.last, time_s=self._clock() if time_s is None else time_s,
                                 actor=actor or self.actor, kind=kind, data=data)
            self.last = record
            if not self._pending:
                self._oldest_s = time.monotonic()
            self._pending.append(record)
            urgent = record.commit if commit is None else commit
            self._urgent = self._urgent or urgent or len(self._pending) >= self.max_records
            failures = self._failures
            if self._urgent or len(self._pending) == 1:  # otherwise the flusher already waits for this batch
                self._cond.notify_all()
        if urgent and wait:
            self._wait(record.seq, failures)
        return record

    def wait_durable(self, seq: int) -> None:
        """Block until record `seq` is durable; MissionLogError if a flush fails meanwhile (the writer retries)."""
        with self._cond:
            failures = self._failures
        self._wait(seq, failures)

    def _wait(self, seq: int, failures: int) -> None:
        with self._cond:
            while self._durable is None or self._durable.seq < seq:
                if self._failures > failures:
                    raise MissionLogError(uri=self.uri, seq=seq, why=f"it could not be written ({self._failure!r})",
                                          fix="check the log's storage; the writer keeps retrying")
                self._cond.wait()

    async def durable(self, record: Record) -> None:
        """`wait_durable` for asyncio code: the event loop runs on while the disk syncs."""
        if self._durable is None or self._durable.seq < record.seq:
            await asyncio.get_running_loop().run_in_executor(None, self.wait_durable, record.seq)

    def flush(self) -> None:
        """Make every appended record durable now."""
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            last = self.last
        if last is not None:
            self.wait_durable(last.seq)

    def close(self) -> None:
        """Flush what is queued and stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._flusher.join()
        self._end_segment()

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._closed and not self._pending:
                        return
                    self._cond.wait(None if not self._pending else
                                    max(0.0, self._oldest_s + self.max_delay_s - time.monotonic()))
                batch, self._pending, self._urgent = self._pending, [], False
            self._write_batch(batch)

    def _due(self) -> bool:
        if not self._pending:
            return False
        return self._urgent or self._closed or time.monotonic() - self._oldest_s >= self.max_delay_s

    def _write_batch(self, batch: list[Record]) -> None:
        started = time.perf_counter()
        data = "".join(r.to_line() + "\n" for r in batch).encode()
        try:
            if self.local:
                self._append_local(data, batch[0].seq)
            else:
                self.fs.pipe_file(_join(self.root, SEGMENTS, _segment_name(batch[0].seq)), data)
            self._write_head(Head.of(batch[-1]))
        except Exception as exc:
            logger.exception("mission log %s: flush of records %d..%d failed; retrying", self.uri, batch[0].seq,
                             batch[-1].seq)
            self._end_segment()  # the retry rewrites the whole batch into a new segment
            with self._cond:
                self._failure, self._failures = exc, self._failures + 1
                self._cond.notify_all()
                if self._closed:  # nobody will append again: give up rather than hang the close
                    logger.error("mission log %s: records %d..%d were not written", self.uri, batch[0].seq,
                                 batch[-1].seq + len(self._pending))
                    self._pending = []
                    return
                self._pending, self._urgent = batch + self._pending, True
                self._cond.wait(max(self.max_delay_s, 0.1))
            return
        with self._cond:
            self._durable = batch[-1]
            self.flushes += 1
            self.flush_s += time.perf_counter() - started
            self._cond.notify_all()

    def _end_segment(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                logger.exception("mission log %s: closing a failed segment", self.uri)
            self._file = None

    def _append_local(self, data: bytes, first_seq: int) -> None:
        if self._file is None:
            self._file = open(_join(self.root, SEGMENTS, _segment_name(first_seq)), "ab")
            _fsync_dir(_join(self.root, SEGMENTS))
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def _write_head(self, head: Head) -> None:
        """Atomic replace, not fsync'd: a head lost in a power cut is an older head, still a true prefix."""
        body = json.dumps(head.to_dict()).encode()
        path = _join(self.root, HEAD)
        if not self.local:
            self.fs.pipe_file(path, body)
            return
        tmp = path + ".tmp"
        with open(tmp, "wb") as out:
            out.write(body)
        os.replace(tmp, path)


class DurableEventLog(EventLog):
    """An EventLog whose every event is also appended to the mission log (drop-in for the supervisor).

    `emit` never waits for the disk: commit records are flushed at once in the background, and the log's
    order makes any durable record's predecessors durable too. Before acting outside the supervisor on a
    transition (running a tool, answering `result`), `await self.writer.durable(self.last_record)`."""

    def __init__(self, mission_id: str, writer: MissionLogWriter) -> None:
        super().__init__(mission_id)
        self.writer = writer
        self.last_record: Record | None = None

    def emit(self, now_s: float, kind: str, status: str, **fields: Any) -> Event:
        event = super().emit(now_s, kind, status, **fields)
        record_kind, data = event_record(event, mission_id=self.mission_id)
        self.last_record = self.writer.append(record_kind, data, actor=_actor_of(event), time_s=now_s, wait=False)
        return event


def read_log(uri: str, *, after_seq: int = -1) -> list[Record]:
    """The log's records in order (those with seq > `after_seq`). A line torn by a crash at the end of a
    segment is left out; any other unreadable line raises MissionLogError naming where it is."""
    fs, root = fsspec.core.url_to_fs(uri)
    directory = _join(root, SEGMENTS)
    if not fs.exists(directory):
        return []
    records: list[Record] = []
    seen: dict[int, str] = {}
    for name in sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(directory, detail=False)):
        if name.endswith(".jsonl"):
            for record in _read_segment(uri, fs.cat_file(_join(directory, name)), name):
                if seen.get(record.seq) != record.hash:  # a batch rewritten after a failed flush reads once
                    records.append(record)
                    seen[record.seq] = record.hash
    return [r for r in records if r.seq > after_seq]


def read_head(uri: str) -> Head | None:
    """The head the writer last made durable, or None when there is none."""
    fs, root = fsspec.core.url_to_fs(uri)
    path = _join(root, HEAD)
    if not fs.exists(path):
        return None
    try:
        raw = json.loads(fs.cat_file(path))
        return Head(seq=int(raw["seq"]), hash=str(raw["hash"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise MissionLogError(uri=uri, seq=None, why=f"its {HEAD} file is unreadable ({exc})") from None


def verify_log(uri: str, *, expected_head: Head | None = None) -> VerifyResult:
    """Check a stored log against its own head file and `expected_head` (e.g. the one in result.json)."""
    try:
        records = read_log(uri)
        own_head = read_head(uri)
    except MissionLogError as exc:
        return VerifyResult(ok=False, first_bad_seq=exc.seq, reason=exc.why)
    result = verify(records)
    for head in (own_head, expected_head):
        if result.ok and head is not None:
            result = verify(records, expected_head=head)
    return result


def _read_segment(uri: str, content: bytes, name: str) -> list[Record]:
    records: list[Record] = []
    lines = content.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if number == len(lines):  # after the last newline: empty, or a line torn by a crash
            if line:
                logger.warning("mission log %s: segment %s ends in a torn line (never acknowledged)", uri, name)
            break
        try:
            records.append(Record.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            seq = records[-1].seq + 1 if records else int(name.split("-")[0])
            raise MissionLogError(uri=uri, seq=seq, why=f"line {number} of segment {name} is not a record "
                                  f"({type(exc).__name__}: {exc})") from None
    return records


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:012d}-{time.time_ns():020d}.jsonl"


def _actor_of(event: Event) -> str:
    return event.agent if event.kind == "plan" and event.agent else "supervisor"


def _join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/"), *parts[1:]])


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
