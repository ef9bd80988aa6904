"""Reading a serving YAML; the schema itself is `controlplane.config.ServingConfig`."""

from __future__ import annotations

from pathlib import Path

import yaml

from controlplane.config import ServingConfig, parse_serving_config
from controlplane.errors import SpecError

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


def load_serving_config(path: str | Path | None = None) -> ServingConfig:
    """Read a serving YAML; None = the shipped `serving/default.yaml`."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not path.is_file():
        raise SpecError(where=str(path), value=str(path), why="no such file",
                        fix="pass the path of a serving YAML")
    return parse_serving_config(yaml.safe_load(path.read_text()), where=str(path))
