"""The README's serving examples stay true: its config block parses, its Serve config file is real."""

import re
from pathlib import Path

import yaml

import serving
from controlplane.config.serving import parse_serving_config

ROOT = Path(__file__).resolve().parents[2]


def serving_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("<!-- section:serving -->"):text.index("<!-- /section:serving -->")]


def test_readme_config_example_is_valid():
    blocks = re.findall(r"```yaml\n(.*?)```", serving_section(), flags=re.S)
    config = parse_serving_config(yaml.safe_load(blocks[0]), where="README")
    assert {spec.kind for spec in config.models.values()} == {"vllm", "openai", "scripted"}
    assert config.models["default"].fallback == "gpt"


def test_serve_config_file_points_at_the_builder():
    app = yaml.safe_load((ROOT / "serving" / "serve_config.yaml").read_text())["applications"][0]
    module, name = app["import_path"].split(":")
    assert module == "serving" and getattr(serving, name) is serving.app_builder
    assert app["args"]["config"] is None
