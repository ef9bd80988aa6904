import pydantic
import pytest

import memory


def test_config_rejects_bad_namespaces_and_unknown_fields():
    with pytest.raises(pydantic.ValidationError, match="not a namespace name"):
        memory.MemoryConfig(data_dir="/tmp/x", namespaces=["*"])
    with pytest.raises(pydantic.ValidationError):
        memory.MemoryConfig(data_dir="/tmp/x", exact_belw=3)


def test_relative_data_dir_is_made_absolute_where_the_config_is_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert memory.MemoryConfig(data_dir="runs/m/memory").data_dir == str(tmp_path / "runs/m/memory")
    assert memory.MemoryConfig(data_dir="s3://bucket/m").data_dir == "s3://bucket/m"
