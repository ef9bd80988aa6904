"""The mission log on disk and on fsspec stores: durability rules, restarts, torn lines, and tampering with
the files themselves (each caught by `verify_log`, naming the first bad record)."""

import json
import time
from pathlib import Path

import pytest

from controlplane._core.events import EventLog
from controlplane._logfile import DurableEventLog, MissionLogWriter, read_head, read_log, verify_log
from controlplane.errors import MissionLogError

START = {"mission_id": "m1", "name": "launch", "spec": {"goal": "g"}, "format": 1}


def write(uri, n=10, **options):
    writer = MissionLogWriter(str(uri), **options)
    writer.append("mission.start", START)
    for i in range(n - 1):
        writer.append("task.ready", {"task": f"t{i}"})
    writer.close()
    return writer


def segment(uri):
    (path,) = sorted((Path(uri) / "log").glob("*.jsonl"))
    return path


def lines(uri):
    return segment(uri).read_bytes().splitlines(keepends=True)


def put(uri, new_lines):
    segment(uri).write_bytes(b"".join(new_lines))


def wait_for(check, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_round_trip_with_head(tmp_path):
    writer = write(tmp_path, 10)
    records = read_log(str(tmp_path))
    assert [r.seq for r in records] == list(range(10)) and records[0].kind == "mission.start"
    assert read_head(str(tmp_path)) == writer.head and writer.head.seq == 9
    assert verify_log(str(tmp_path)).ok
    assert [r.seq for r in read_log(str(tmp_path), after_seq=6)] == [7, 8, 9]


def test_a_commit_record_is_durable_when_append_returns(tmp_path):
    writer = MissionLogWriter(str(tmp_path), max_delay_s=60.0)
    writer.append("task.ready", {"task": "a"})
    assert read_log(str(tmp_path)) == []  # batched: not yet on disk
    writer.append("task.succeeded", {"task": "a", "agent": "w", "attempt": 1, "attempt_key": "m1/a/1",
                                     "output": "done"})
    assert [r.kind for r in read_log(str(tmp_path))] == ["task.ready", "task.succeeded"]
    assert read_head(str(tmp_path)).seq == 1
    writer.close()


def test_batched_records_are_flushed_within_the_delay_bound(tmp_path):
    writer = MissionLogWriter(str(tmp_path), max_delay_s=0.02)
    writer.append("task.ready", {"task": "a"})
    wait_for(lambda: len(read_log(str(tmp_path))) == 1, timeout_s=2.0)
    writer.close()


def test_a_full_batch_is_flushed_without_waiting_for_the_delay(tmp_path):
    writer = MissionLogWriter(str(tmp_path), max_records=4, max_delay_s=60.0)
    for i in range(3):
        writer.append("task.ready", {"task": f"t{i}"})
    assert writer.flushes == 0
    writer.append("task.ready", {"task": "t3"})
    wait_for(lambda: len(read_log(str(tmp_path))) == 4)
    writer.close()


def test_an_async_caller_awaits_a_commit_without_blocking_its_loop(tmp_path):
    import asyncio

    writer = MissionLogWriter(str(tmp_path), max_delay_s=60.0)

    async def commit():
        record = writer.append("tool.intent", {"call_key": "k", "tool": "t", "task": "a", "attempt_key": "m1/a/1",
                                               "call_index": 0, "args_digest": "sha256:0", "side_effects": True,
                                               "idempotent": False}, wait=False)
        await writer.durable(record)
        return record

    record = asyncio.run(commit())
    assert read_log(str(tmp_path))[-1] == record
    writer.close()


def test_a_new_writer_continues_the_chain_in_a_new_segment(tmp_path):
    write(tmp_path, 3)
    writer = MissionLogWriter(str(tmp_path))
    assert writer.last.seq == 2
    record = writer.append("task.ready", {"task": "later"})
    writer.close()
    assert record.seq == 3 and len(list((tmp_path / "log").glob("*.jsonl"))) == 2
    assert verify_log(str(tmp_path)).ok


def test_a_line_torn_by_a_crash_is_dropped_and_the_log_goes_on(tmp_path):
    write(tmp_path, 5)
    torn = lines(tmp_path)
    put(tmp_path, torn[:-1] + [torn[-1][:30]])
    assert [r.seq for r in read_log(str(tmp_path))] == [0, 1, 2, 3]
    writer = MissionLogWriter(str(tmp_path))
    assert writer.append("task.ready", {"task": "again"}).seq == 4
    writer.close()
    assert verify_log(str(tmp_path)).ok


def test_a_writer_refuses_to_continue_a_broken_chain(tmp_path):
    write(tmp_path, 5)
    old = lines(tmp_path)
    put(tmp_path, old[:2] + old[3:])
    with pytest.raises(MissionLogError, match="record 2 is bad: record 2 is missing"):
        MissionLogWriter(str(tmp_path))


def _edit(old):
    raw = json.loads(old[4])
    raw["data"]["task"] = "forged"
    return old[:4] + [json.dumps(raw).encode() + b"\n"] + old[5:]


@pytest.mark.parametrize(("tamper", "first_bad", "says"), [
    (_edit, 4, "was changed"),
    (lambda old: old[:4] + old[5:], 4, "missing (deleted)"),
    (lambda old: old[:4] + [old[5], old[4]] + old[6:], 4, "found seq 5 at position 4"),
    (lambda old: old[:7], 7, "truncated"),
    (lambda old: old[:4] + [b"not json\n"] + old[5:], 4, "line 5 of segment"),
])
def test_tampered_files_are_caught_naming_the_first_bad_record(tmp_path, tamper, first_bad, says):
    write(tmp_path, 10)
    put(tmp_path, tamper(lines(tmp_path)))
    result = verify_log(str(tmp_path))
    assert not result.ok and result.first_bad_seq == first_bad and says in result.reason


def test_truncation_of_log_and_head_is_caught_by_a_head_kept_elsewhere(tmp_path):
    writer = write(tmp_path, 10)
    kept = writer.head  # e.g. the head in result.json, copied off the run directory
    put(tmp_path, lines(tmp_path)[:6])
    (tmp_path / "log.head").write_text(json.dumps({"seq": 5, "hash": read_log(str(tmp_path))[-1].hash}))
    assert verify_log(str(tmp_path)).ok
    result = verify_log(str(tmp_path), expected_head=kept)
    assert result.first_bad_seq == 6 and "truncated" in result.reason


def test_an_fsspec_store_gets_one_object_per_flush():
    import fsspec

    uri = f"memory://missions/{time.time_ns()}"
    writer = MissionLogWriter(uri, max_delay_s=60.0)
    for i in range(7):
        writer.append("task.ready", {"task": f"t{i}"})
        if i == 2:
            writer.flush()
    writer.close()
    assert [r.seq for r in read_log(uri)] == list(range(7))
    objects = fsspec.filesystem("memory").ls(uri + "/log", detail=False)
    assert read_head(uri).seq == 6 and len(objects) == writer.flushes >= 2 and verify_log(uri).ok
    again = MissionLogWriter(uri)
    assert again.append("task.ready", {"task": "t7"}).seq == 7
    again.close()
    assert verify_log(uri).ok


def test_durable_event_log_writes_every_event(tmp_path):
    writer = MissionLogWriter(str(tmp_path))
    log = DurableEventLog("m1", writer)
    assert isinstance(log, EventLog)
    log.emit(1.0, "task", "running", task="a", agent="w", attempt=1, data={"deadline_s": 2.0, "changes": {}})
    log.emit(2.0, "task", "succeeded", task="a", agent="w", attempt=1, data={"output": "x", "tokens": 3})
    writer.close()
    records = read_log(str(tmp_path))
    assert [r.kind for r in records] == ["task.dispatch", "task.succeeded"]
    assert records[1].data["attempt_key"] == "m1/a/1" and records[1].time_s == 2.0
    assert [e.status for e in log.events] == ["running", "succeeded"]
    assert log.last_record == records[1]


def test_a_failing_store_fails_the_commit_and_the_writer_retries(tmp_path, monkeypatch):
    writer = MissionLogWriter(str(tmp_path), max_delay_s=0.01)
    real, calls = writer._append_local, []

    def flaky(data, first_seq):
        calls.append(first_seq)
        if len(calls) == 1:
            raise OSError("disk full")
        real(data, first_seq)

    monkeypatch.setattr(writer, "_append_local", flaky)
    succeeded = {"task": "a", "agent": "w", "attempt": 1, "attempt_key": "m1/a/1", "output": "x"}
    with pytest.raises(MissionLogError, match="disk full"):
        writer.append("task.succeeded", succeeded)
    writer.flush()  # the retry writes the same batch
    writer.close()
    assert [r.kind for r in read_log(str(tmp_path))] == ["task.succeeded"] and verify_log(str(tmp_path)).ok
