"""Reading a serving YAML; the schema itself is `controlplane.config.ServingConfig`."""

from __future__ import annotations

from pathlib import Path

from controlplane.config import ServingConfig, parse_serving_config
from controlplane.config._yaml import as_file_path, read_yaml

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


def load_serving_config(path: str | Path | None = None) -> ServingConfig:
    """Read a serving YAML; None = the shipped `serving/default.yaml`."""
    path = DEFAULT_CONFIG_PATH if path is None else as_file_path(
        path, fix="pass the path of a serving YAML file, or None for serving/default.yaml")
    return parse_serving_config(read_yaml(path, expected="a serving YAML file"), where=str(path))
