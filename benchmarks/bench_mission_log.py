"""bench_mission_log: what the durable mission log costs per record, batched and at commit points.

Records shaped like a mission's (task.dispatch with its attempt key, ~250 bytes of JSON) are appended to a
local log. Three ways, same run:
1. batched: the writer's defaults (flush + fsync at most every 20 ms or 64 records); no commit records.
2. mission mix: every 3rd record a commit point, appended as the supervisor's event log does (flushed at
   once, the caller does not wait for it).
3. commit every record, waiting for each to be durable (what a tool call's intent costs its caller).
Baselines: the same JSON lines appended and fsync'd one by one with plain Python (no chain, no head file),
and appended without fsync (the in-memory floor).

append_us = caller-visible time per append; flush_ms = mean time of one flush (write + fsync + head file).

    python benchmarks/bench_mission_log.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane._logfile import MissionLogWriter, verify_log  # noqa: E402

# ---- settings ------------------------------------------------------------------------------------
RECORDS = {"quick": 1_000, "full": 10_000}
COMMIT_EVERY = 3


def data(i: int) -> dict:
    return {"task": f"task-{i % 200}", "agent": f"agent-{i % 9}", "attempt": 1 + i % 3,
            "attempt_key": f"mission-20261201-abcdef/task-{i % 200}/{1 + i % 3}", "deadline_s": 1764600000.0 + i,
            "changes": {}, "message": "dispatched to the least-loaded agent of role 'researcher'"}


def writer_run(n: int, commit_every: int | None, wait: bool = True) -> dict:
    root = tempfile.mkdtemp(prefix="bench-mission-log-")
    try:
        writer = MissionLogWriter(root)
        started = time.perf_counter()
        for i in range(n):
            commit = commit_every is not None and i % commit_every == commit_every - 1
            writer.append("task.dispatch", data(i), commit=commit, wait=wait)
        appended_s = time.perf_counter() - started
        writer.close()
        assert verify_log(root).ok
        return {"append_us": appended_s / n * 1e6, "flushes": writer.flushes,
                "records_per_flush": n / writer.flushes, "flush_ms": writer.flush_s / writer.flushes * 1e3}
    finally:
        shutil.rmtree(root)


def plain_run(n: int, fsync: bool) -> float:
    root = tempfile.mkdtemp(prefix="bench-mission-log-")
    try:
        with open(os.path.join(root, "plain.jsonl"), "ab") as out:
            started = time.perf_counter()
            for i in range(n):
                out.write(json.dumps({"seq": i, "kind": "task.dispatch", "data": data(i)}).encode() + b"\n")
                out.flush()
                if fsync:
                    os.fsync(out.fileno())
            return (time.perf_counter() - started) / n * 1e6
    finally:
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n = RECORDS["quick" if args.quick else "full"]
    writer_run(200, None)  # warm-up
    batched = writer_run(n, None)
    mixed = writer_run(n, COMMIT_EVERY, wait=False)
    every = writer_run(max(200, n // 10), 1)
    figures = {
        "records": n,
        "batched_append_us": round(batched["append_us"], 1),
        "batched_records_per_flush": round(batched["records_per_flush"], 1),
        "batched_flush_ms": round(batched["flush_ms"], 2),
        "mix_append_us": round(mixed["append_us"], 1),
        "mix_flush_ms": round(mixed["flush_ms"], 2),
        "commit_append_us": round(every["append_us"], 1),
        "plain_fsync_each_us": round(plain_run(max(200, n // 10), True), 1),
        "plain_no_fsync_us": round(plain_run(n, False), 1),
    }
    figures["batched_vs_plain_fsync_each"] = round(figures["plain_fsync_each_us"] / figures["batched_append_us"], 1)
    figures.update({"storage": f"local disk under {tempfile.gettempdir()}", "cores": os.cpu_count(), "gpu": False})
    print(f"mission log: {figures['batched_append_us']} us/record batched "
          f"({figures['batched_records_per_flush']} records per {figures['batched_flush_ms']} ms flush), "
          f"{figures['mix_append_us']} us/record with every {COMMIT_EVERY}rd a commit (not awaited), "
          f"{figures['commit_append_us']} us per committed record; plain fsync per line "
          f"{figures['plain_fsync_each_us']} us, no fsync {figures['plain_no_fsync_us']} us "
          f"(batched is {figures['batched_vs_plain_fsync_each']}x cheaper than fsync per line); "
          f"{figures['storage']}, {figures['cores']} cores, no GPU")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
