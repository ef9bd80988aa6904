"""The README's mission example and every shipped mission file stay valid."""

import re
from pathlib import Path

import yaml

from controlplane import load_mission, parse_mission

ROOT = Path(__file__).parents[2]


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("<!-- section:missions -->"):text.index("<!-- /section:missions -->")]


def test_readme_mission_example_is_a_valid_spec_using_every_top_level_field():
    blocks = re.findall(r"```yaml\n(.*?)```", _section(), re.S)
    data = yaml.safe_load(blocks[0])
    spec = parse_mission(data, source="README.md")
    assert set(data) == {"name", "goal", "serving", "agents", "tasks", "budgets", "policies", "memory"}
    assert spec.tasks[1].fallback_agent == "researcher" and spec.agents[0].resources.num_cpus == 0.25


def test_readme_commands_parse():
    from controlplane.cli import build_parser

    commands = re.findall(r"^(?:RAY_AUTH_MODE=token ray job submit.*?-- \\\n\s+python -m )?controlplane (.+?)(?:\s+#.*)?$",
                          _section(), re.M)
    assert len(commands) >= 5
    for line in commands:
        build_parser().parse_args(line.split())


def test_every_mission_file_loads():
    files = sorted((ROOT / "missions").rglob("*.yaml"))
    missions = [f for f in files if "agents:" in f.read_text()]
    assert len(missions) >= 3
    for path in missions:
        assert load_mission(path).agents
