import numpy as np

from memory._durable import Durable, decode_record, encode_record


def test_record_round_trip_and_corruption():
    line = encode_record({"seq": 1, "op": "grant"})
    assert decode_record(line) == {"seq": 1, "op": "grant"}
    assert decode_record(line[:-1]) is None                       # torn: no newline
    assert decode_record(line.replace(b"grant", b"grunt")) is None  # checksum mismatch
    assert decode_record(b"zzzzzzzz {}\n") is None


def test_segments_and_snapshot_replace_older_ones(tmp_path):
    import faiss

    durable = Durable(str(tmp_path))
    durable.open_segment(1)
    for seq in (1, 2):
        durable.append({"seq": seq, "op": "x"})
    index = faiss.IndexFlatIP(4)
    index.add(np.eye(4, dtype=np.float32))
    durable.write_snapshot(2, {"seq": 2, "n": 1}, {"ns": index})
    durable.append({"seq": 3, "op": "y"})
    durable.close()
    snapshot, records = Durable(f"file://{tmp_path}").load()
    assert snapshot.seq == 2 and snapshot.state["n"] == 1 and snapshot.indexes["ns"].ntotal == 4
    assert records == [{"seq": 3, "op": "y"}]
    assert len(list(tmp_path.glob("log-*"))) == 1


def test_uncommitted_snapshot_is_ignored(tmp_path):
    durable = Durable(str(tmp_path))
    durable.open_segment(1)
    durable.append({"seq": 1, "op": "x"})
    durable.close()
    (tmp_path / "snapshot-000000000001").mkdir()  # a crash before COMMITTED was written
    snapshot, records = Durable(str(tmp_path)).load()
    assert snapshot is None and records == [{"seq": 1, "op": "x"}]
