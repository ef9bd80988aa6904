"""The mission log's record format and chain check: each tamper case is caught, naming the first bad record."""

import dataclasses

import pytest

from controlplane._core.events import EventLog
from controlplane._core.mission_log import (
    GENESIS_HASH,
    Head,
    Record,
    attempt_key,
    canonical,
    digest,
    event_record,
    make_record,
    record_event,
    record_hash,
    verify,
)


def chain(n=6):
    records, prev = [], None
    for i in range(n):
        prev = make_record(prev, time_s=100.0 + i, actor="supervisor", kind="task.ready", data={"task": f"t{i}"})
        records.append(prev)
    return records


def edited(record, **changes):
    return dataclasses.replace(record, **changes)


def rehashed(record):
    return edited(record, hash=record_hash(seq=record.seq, time_s=record.time_s, actor=record.actor,
                                           kind=record.kind, data=record.data, prev_hash=record.prev_hash))


def test_records_chain_from_the_genesis_hash_and_hash_every_field():
    records = chain(3)
    assert records[0].seq == 0 and records[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    twin = make_record(None, time_s=100.0, actor="supervisor", kind="task.ready", data={"task": "t0"})
    assert twin.hash == records[0].hash  # deterministic: canonical JSON, no clock inside
    for change in ({"time_s": 100.5}, {"actor": "writer"}, {"data": {"task": "t1"}}):
        other = make_record(None, **{"time_s": 100.0, "actor": "supervisor", "kind": "task.ready",
                                     "data": {"task": "t0"}, **change})
        assert other.hash != twin.hash


def test_canonical_json_sorts_keys_without_spaces_and_a_record_reads_back_to_the_same_hash():
    assert canonical({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    record = make_record(None, time_s=1.5, actor="supervisor", kind="task.ready",
                         data={"task": "t", "pair": ("x", "y")})
    assert record.data["pair"] == ["x", "y"]
    import json

    again = Record.from_dict(json.loads(record.to_line()))
    assert again == record and verify([again]).ok


@pytest.mark.parametrize(("kind", "data", "match"), [
    ("Task Dispatch", {}, "not of the form"),
    ("task.dispatch", {"task": "t", "agent": "a"}, r"lacks data fields \['attempt', 'attempt_key'\]"),
])
def test_a_malformed_record_is_refused_with_what_is_missing(kind, data, match):
    with pytest.raises(ValueError, match=match):
        make_record(None, time_s=0.0, actor="supervisor", kind=kind, data=data)


def test_data_must_be_json():
    with pytest.raises(TypeError):
        make_record(None, time_s=0.0, actor="supervisor", kind="task.ready", data={"task": object()})


def test_a_whole_chain_verifies():
    records = chain()
    result = verify(records, expected_head=Head.of(records[-1]))
    assert result.ok and result.first_bad_seq is None and result.records == 6


def test_an_edited_record_is_named():
    records = chain()
    records[3] = edited(records[3], data={"task": "forged"})
    result = verify(records)
    assert not result.ok and result.first_bad_seq == 3 and "record 3 (task.ready) was changed" in result.reason


def test_an_edited_and_rehashed_record_breaks_the_link_to_the_next():
    records = chain()
    records[3] = rehashed(edited(records[3], data={"task": "forged"}))
    result = verify(records)
    assert result.first_bad_seq == 4 and "does not follow record 3" in result.reason


def test_a_deleted_record_is_named():
    records = chain()
    del records[2]
    result = verify(records)
    assert result.first_bad_seq == 2 and "record 2 is missing (deleted)" in result.reason


def test_reordered_records_are_caught_at_the_first_out_of_place():
    records = chain()
    records[2], records[3] = records[3], records[2]
    result = verify(records)
    assert result.first_bad_seq == 2 and "found seq 3 at position 2" in result.reason


def test_a_truncated_tail_is_caught_against_the_head_only():
    records = chain()
    head = Head.of(records[-1])
    assert verify(records[:4]).ok  # without a head, a shorter log is a valid log: say so, do not pretend
    result = verify(records[:4], expected_head=head)
    assert result.first_bad_seq == 4 and "cut off (truncated)" in result.reason


def test_records_past_an_older_head_are_fine_but_a_rewritten_chain_is_not():
    records = chain()
    assert verify(records, expected_head=Head.of(records[2])).ok  # the head file lags the log by a flush
    forged, prev = records[:2], records[1]
    for i in range(2, 6):
        prev = make_record(prev, time_s=200.0 + i, actor="supervisor", kind="task.ready", data={"task": "x"})
        forged.append(prev)
    assert verify(forged).ok  # rewritten from record 2 on: only a head kept elsewhere can tell
    result = verify(forged, expected_head=Head.of(records[-1]))
    assert result.first_bad_seq == 5 and "rewritten" in result.reason


def test_digest_and_attempt_key():
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})
    assert digest("x").startswith("sha256:") and len(digest("x")) == 71
    assert attempt_key("m1", "draft", 2) == "m1/draft/2"


def test_scheduler_events_become_records_with_their_attempt_key():
    log = EventLog("m1")
    dispatch = log.emit(1.0, "task", "running", task="draft", agent="writer", attempt=2,
                        data={"deadline_s": 121.0, "changes": {}})
    assert event_record(dispatch, mission_id="m1") == ("task.dispatch", {
        "task": "draft", "agent": "writer", "attempt": 2, "attempt_key": "m1/draft/2", "deadline_s": 121.0,
        "changes": {}})
    failed = log.emit(2.0, "task", "failed", task="draft", agent="writer", attempt=2, message="boom")
    assert event_record(failed, mission_id="m1")[1]["error"] == "boom"
    status = log.emit(3.0, "mission", "succeeded", message="3 succeeded")
    assert event_record(status, mission_id="m1") == ("mission.status", {"status": "succeeded",
                                                                         "message": "3 succeeded"})
    plan = log.emit(0.5, "plan", "planned", agent="planner", data={"tasks": []})
    assert event_record(plan, mission_id="m1")[0] == "mission.plan"


def test_a_restarted_supervisor_reads_its_event_stream_back_from_the_records_the_events_made():
    log, records, prev = EventLog("m1"), [], None
    for fields in [dict(kind="mission", status="running", message="2 tasks"),
                   dict(kind="plan", status="planned", agent="planner", data={"tasks": [{"id": "t1"}]}),
                   dict(kind="task", status="running", task="t1", agent="a", attempt=1, data={"deadline_s": 9.0}),
                   dict(kind="task", status="retrying", task="t1", agent="a", attempt=1, message="boom",
                        data={"error": "ValueError: boom", "retry_at_s": 3.0}),
                   dict(kind="task", status="failed", task="t1", agent="a", attempt=2, message="boom"),
                   dict(kind="task", status="skipped", task="t2", message="t1 failed"),
                   dict(kind="task", status="delegated", task="t3", agent="a",
                        data={"parent": "t1", "task": {"id": "t3", "agent": "a"}, "call_key": "m/t1/1/call/0"}),
                   dict(kind="conflict", status="resolved", data={"topic": "x", "policy": "judge", "winner": "a",
                                                                  "text": "y", "reason": "z", "agents": ["a", "b"]}),
                   dict(kind="approval", status="requested", agent="a", task="t1", data={"id": "ap-1"}),
                   dict(kind="budget", status="exceeded", data={"budget": "tokens", "limit": 1, "used": 2})]:
        event = log.emit(float(len(log.events)), **fields)
        kind, data = event_record(event, mission_id="m1")
        prev = make_record(prev, time_s=event.time_s, actor="supervisor", kind=kind, data=data)
        records.append(prev)
        prev = make_record(prev, time_s=event.time_s, actor="a", kind="budget.charge", data={"agent": "a",
                                                                                             "tokens": 1})
        records.append(prev)  # no event made it
    read_back = [record_event(r, seq) for seq, r in enumerate(r for r in records if r.kind != "budget.charge")]
    assert read_back == log.events
    assert record_event(records[1], 0) is None


def test_the_hash_is_over_the_canonical_body_whatever_the_inputs_look_like():
    odd = {"z": [1, ("a", "b")], "a": {"y": 1.5, "x": "é\n\"q\""}, "n": None}
    record = make_record(None, time_s=7, actor="a\"gent", kind="task.ready", data={"task": "t", **odd})
    assert record.time_s == 7.0 and isinstance(record.time_s, float)
    assert record.hash == record_hash(seq=0, time_s=7.0, actor='a"gent', kind="task.ready", data=record.data,
                                      prev_hash=GENESIS_HASH)
    import json

    assert Record.from_dict(json.loads(record.to_line())) == record


def test_a_caller_changing_its_data_later_does_not_change_the_record():
    data = {"task": "t", "list": [1]}
    record = make_record(None, time_s=1.0, actor="s", kind="task.ready", data=data)
    data["list"].append(2)
    assert record.data["list"] == [1] and verify([record]).ok
