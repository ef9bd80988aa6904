import pydantic
import pytest

import memory


def test_public_names_are_pinned_and_sorted():
    assert memory.__all__ == [
        "CONFLICT_TOPIC", "Conflict", "Entry", "Hit", "Judge", "MemoryActor", "MemoryConfig", "NewEntry",
        "PostEvent", "Receipt", "RouterJudge", "SearchFilters", "Verdict", "start_memory_actor",
    ]
    assert memory.__all__ == sorted(memory.__all__)
    assert all(hasattr(memory, name) for name in memory.__all__)


def test_config_rejects_bad_namespaces_and_unknown_fields():
    with pytest.raises(pydantic.ValidationError, match="not a namespace name"):
        memory.MemoryConfig(data_dir="/tmp/x", namespaces=["*"])
    with pytest.raises(pydantic.ValidationError):
        memory.MemoryConfig(data_dir="/tmp/x", exact_belw=3)


def test_relative_data_dir_is_made_absolute_where_the_config_is_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert memory.MemoryConfig(data_dir="runs/m/memory").data_dir == str(tmp_path / "runs/m/memory")
    assert memory.MemoryConfig(data_dir="s3://bucket/m").data_dir == "s3://bucket/m"
