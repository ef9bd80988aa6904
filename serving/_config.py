"""Reading a serving YAML; the schema itself is `controlplane.config.ServingConfig`."""

from __future__ import annotations

from pathlib import Path

from controlplane.config import ServingConfig, parse_serving_config
from controlplane.config._yaml import read_yaml

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


def load_serving_config(path: str | Path | None = None) -> ServingConfig:
    """Read a serving YAML; None = the shipped `serving/default.yaml`."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    return parse_serving_config(read_yaml(path, expected="a serving YAML file"), where=str(path))
