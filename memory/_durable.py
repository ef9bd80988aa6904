"""Durability: an append-only, fsynced write-ahead log in segments, plus FAISS index snapshots.

Layout under the data directory (a local path or an fsspec URL):

    log-000000000001-<ns>.jsonl records 1.. ; one line each: "<crc32 hex> <json>\n"
    snapshot-000000000840/      state.json, ns-0.faiss, ns-1.faiss, ..., COMMITTED (written last)

A write is acknowledged only after its record is flushed and fsynced. On start the newest committed
snapshot is loaded and every later record replayed; a torn last line (a crash mid-write, never
acknowledged) ends its segment. Each start opens a new segment, so nothing is appended after a torn line.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import faiss
import fsspec
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

COMMITTED = "COMMITTED"


@dataclass
class Snapshot:
    seq: int
    state: dict[str, Any]
    indexes: dict[str, faiss.Index]


def encode_record(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_record(line: bytes) -> dict[str, Any] | None:
    """The record of one log line, or None when the line is torn or corrupt."""
    if not line.endswith(b"\n") or len(line) < 10:
        return None
    crc, body = line[:8], line[9:-1]
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        return json.loads(body)
    except ValueError:
        return None


class Durable:
    """The log and the snapshots of one memory store."""

    def __init__(self, url: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(self.root, exist_ok=True)
        self._file: Any = None

    def load(self) -> tuple[Snapshot | None, list[dict[str, Any]]]:
        """The newest committed snapshot and every valid record after it, in order."""
        snapshot = self._load_snapshot()
        after = snapshot.seq if snapshot else 0
        records = [r for r in self._read_records() if r["seq"] > after]
        for expected, record in enumerate(records, start=after + 1):
            if record["seq"] != expected:
                logger.error("memory log in %s skips from seq %d to %d; replaying up to the gap",
                             self.root, expected - 1, record["seq"])
                return snapshot, records[: expected - after - 1]
        return snapshot, records

    def open_segment(self, first_seq: int) -> None:
        """Start a new log segment whose first record will be `first_seq`."""
        self.close()
        # The start time in the name keeps a new segment apart from a torn one that began at the same seq.
        path = self._path(f"log-{first_seq:012d}-{time.time_ns():020d}.jsonl")
        self._file = open(path, "ab") if self.local else self.fs.open(path, "ab")
        self._sync_dir()

    def ensure_open(self, first_seq: int) -> None:
        """Open a new segment unless one is open (after a failure closed it)."""
        if self._file is None:
            self.open_segment(first_seq)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and make it durable before returning."""
        self._file.write(encode_record(record))
        self._file.flush()
        if self.local:
            os.fsync(self._file.fileno())

    def write_snapshot(self, seq: int, state: dict[str, Any], indexes: dict[str, faiss.Index]) -> None:
        """Write a snapshot at `seq`, commit it, start a new segment, then drop older segments and snapshots."""
        directory = f"snapshot-{seq:012d}"
        self.fs.makedirs(self._path(directory), exist_ok=True)
        names = {namespace: f"ns-{n}.faiss" for n, namespace in enumerate(sorted(indexes))}
        for namespace, name in names.items():
            self._write(self._path(directory, name), functools.partial(_write_index, indexes[namespace]))
        state_bytes = json.dumps({**state, "index_files": names}).encode()
        self._write(self._path(directory, "state.json"), lambda out: out.write(state_bytes))
        self._sync_dir(self._path(directory))
        self._write(self._path(directory, COMMITTED), lambda out: out.write(str(seq).encode()))
        self._sync_dir(self._path(directory))
        self.open_segment(seq + 1)
        self._drop_older(seq)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _load_snapshot(self) -> Snapshot | None:
        committed = sorted(
            name for name in self._names("snapshot-") if self.fs.exists(self._path(name, COMMITTED))
        )
        if not committed:
            return None
        directory = committed[-1]
        with self.fs.open(self._path(directory, "state.json"), "rb") as f:
            state = json.loads(f.read())
        indexes = {}
        for namespace, name in state.pop("index_files").items():
            with self.fs.open(self._path(directory, name), "rb") as f:
                indexes[namespace] = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        return Snapshot(seq=int(directory.split("-")[1]), state=state, indexes=indexes)

    def _read_records(self) -> Iterator[dict[str, Any]]:
        for name in sorted(self._names("log-")):
            with self.fs.open(self._path(name), "rb") as f:
                for line in f:
                    record = decode_record(line)
                    if record is None:
                        logger.warning("memory log %s ends in a torn record (a write that was never "
                                       "acknowledged)", name)
                        break
                    yield record

    def _drop_older(self, seq: int) -> None:
        for name in self._names("log-"):
            if int(name[4:16]) <= seq:
                self.fs.rm(self._path(name))
        for name in self._names("snapshot-"):
            if int(name.split("-")[1]) < seq:
                self.fs.rm(self._path(name), recursive=True)

    def _names(self, prefix: str) -> list[str]:
        return [path.rstrip("/").rsplit("/", 1)[-1] for path in self.fs.ls(self.root, detail=False)
                if path.rstrip("/").rsplit("/", 1)[-1].startswith(prefix)]

    def _write(self, path: str, write: Callable[[Any], object]) -> None:
        """Write a whole file through `write(file)`; fsynced on a local disk."""
        if not self.local:
            with self.fs.open(path, "wb") as f:
                write(f)
            return
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    def _sync_dir(self, path: str | None = None) -> None:
        if self.local:
            fd = os.open(path or self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])


def _write_index(index: Any, out: Any) -> None:
    faiss.write_index(index, faiss.PyCallbackIOWriter(out.write))
