"""Every example in README.md and docs/*.md is checked, so the docs cannot drift from the code.

- Python blocks run (those marked `<!-- test: integration -->` run in tests/integration/test_docs_examples_on_ray.py).
  In a unit block, the comment after a `print(...)` is its expected output.
- YAML blocks are validated with the schema their tag or content names; the mission and serving references
  together document every field of their schemas.
- Every `controlplane ...` command line in a shell block parses; every `make` target exists.
- Repository paths, test names, links and anchors named in the docs exist.
- Benchmark figures appear only in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from controlplane import load_mission
from controlplane.cli import build_parser
from controlplane.config import (
    AgentBudget,
    AgentSpec,
    AuthSpec,
    BreakerSpec,
    Budgets,
    ConflictPolicy,
    LimitSpec,
    MemoryAccess,
    MemoryConfig,
    MissionLimitSpec,
    MissionSpec,
    OpenAIModelSpec,
    PlannerSpec,
    Policies,
    ReplicaSpec,
    Resources,
    RouterSpec,
    ScriptedModelSpec,
    ScriptedRule,
    ServingConfig,
    TaskSpec,
    VLLMModelSpec,
    parse_mission,
    parse_serving_config,
)
from controlplane.config.serving import ScriptedFaultSpec, ScriptedToolCall
from tests.helpers.doc_blocks import DOC_FILES, ROOT, Block, all_blocks, link_missions, python_blocks, run_block

BLOCKS = all_blocks()
LANGUAGES = {"python", "yaml", "bash", "text"}
SHELL = {"bash"}
FIGURES_PAGE = ROOT / "docs" / "benchmarks.md"


def blocks_of(lang: str) -> list[Block]:
    return [b for b in BLOCKS if b.lang == lang]


def test_every_block_names_a_language_this_test_knows():
    unknown = [f"{b.name}: {b.lang or '(none)'}" for b in BLOCKS if b.lang not in LANGUAGES]
    assert not unknown, f"give these blocks one of {sorted(LANGUAGES)}: {unknown}"


def test_the_readme_has_one_example_per_part():
    readme = [b for b in BLOCKS if b.path.name == "README.md"]
    assert {"mission", "serving"} <= {b.tag for b in readme if b.lang == "yaml"}
    assert {"readme-openai", "readme-memory", "readme-mission"} <= {b.id for b in readme if b.lang == "python"}


# -- Python ----------------------------------------------------------------------------------------------------
PRINT_WITH_OUTPUT = re.compile(r"^\s*print\(.*\)\s+#\s?(?P<output>.*)$")


@pytest.mark.parametrize("block", python_blocks("unit"), ids=lambda b: b.name)
def test_python_example_runs_and_prints_what_it_says(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(link_missions(tmp_path))
    run_block(block)
    expected = [m.group("output") for m in map(PRINT_WITH_OUTPUT.match, block.code.splitlines()) if m]
    assert capsys.readouterr().out.splitlines() == expected


def test_there_are_examples_in_both_layers():
    assert len(python_blocks("unit")) >= 2 and len(python_blocks("integration")) >= 5


# -- YAML ------------------------------------------------------------------------------------------------------
def _classify(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for key, kind in (("agents", "mission"), ("models", "serving"), ("applications", "serve"),
                      ("available_node_types", "cluster"), ("apiVersion", "k8s")):
        if key in data:
            return kind
    return None


def _check_serve_config(data: dict[str, Any]) -> None:
    for app in data["applications"]:
        module, name = app["import_path"].split(":")
        assert callable(getattr(importlib.import_module(module), name))


def validate_yaml(block: Block) -> tuple[str, Any]:
    """Validate a YAML block with the schema its tag (or, untagged, its content) names; returns (kind, data)."""
    if block.tag == "k8s":
        documents = list(yaml.safe_load_all(block.code))
        assert all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in documents)
        return "k8s", documents
    data = yaml.safe_load(block.code)
    kind = block.tag or _classify(data)
    if kind == "mission":
        parse_mission(data, source=block.name)
    elif kind == "serving":
        parse_serving_config(data, where=block.name)
    elif kind == "memory":
        MemoryConfig.model_validate(data)
    elif kind == "serve":
        _check_serve_config(data)
    elif kind == "cluster":
        assert isinstance(data, dict)
    else:
        pytest.fail(f"{block.name}: tag the block (```yaml mission|serving|memory|serve|cluster|k8s)")
    return kind, data


@pytest.mark.parametrize("block", blocks_of("yaml"), ids=lambda b: b.name)
def test_yaml_example_is_valid(block):
    validate_yaml(block)


def examples(kind: str) -> list[Any]:
    return [data for kind_, data in map(validate_yaml, blocks_of("yaml")) if kind_ == kind]


def keys_at(data: Any, path: tuple[str, ...]) -> Iterator[str]:
    """The keys of every mapping at `path`; `*` walks every list item or mapping value."""
    if not path:
        if isinstance(data, dict):
            yield from data
        return
    head, rest = path[0], path[1:]
    if head == "*":
        children = data if isinstance(data, list) else list(data.values()) if isinstance(data, dict) else []
    else:
        children = [data[head]] if isinstance(data, dict) and isinstance(data.get(head), (dict, list)) else []
    for child in children:
        yield from keys_at(child, rest)


def fields(*models: type[BaseModel]) -> set[str]:
    return {name for model in models for name in model.model_fields}


MISSION_SHAPE = {
    (): fields(MissionSpec), ("agents", "*"): fields(AgentSpec), ("agents", "*", "resources"): fields(Resources),
    ("agents", "*", "memory"): fields(MemoryAccess), ("agents", "*", "budget"): fields(AgentBudget),
    ("tasks", "*"): fields(TaskSpec), ("budgets",): fields(Budgets),
    ("policies",): fields(Policies), ("policies", "conflicts"): fields(ConflictPolicy),
    ("planner",): fields(PlannerSpec),
}
SERVING_SHAPE = {
    (): fields(ServingConfig), ("router",): fields(RouterSpec), ("router", "agent"): fields(LimitSpec),
    ("router", "auth"): fields(AuthSpec),
    ("router", "mission"): fields(MissionLimitSpec),
    ("models", "*"): fields(VLLMModelSpec, ScriptedModelSpec, OpenAIModelSpec),
    ("models", "*", "replicas"): fields(ReplicaSpec), ("models", "*", "breaker"): fields(BreakerSpec),
    ("models", "*", "limits"): fields(LimitSpec), ("models", "*", "replies", "*"): fields(ScriptedRule),
    ("models", "*", "replies", "*", "tool_call"): fields(ScriptedToolCall),
    ("models", "*", "faults"): fields(ScriptedFaultSpec),
}


@pytest.mark.parametrize(("kind", "shape"), [("mission", MISSION_SHAPE), ("serving", SERVING_SHAPE)])
def test_the_examples_document_every_field_of_the_schema(kind, shape):
    found = examples(kind)
    for path, wanted in shape.items():
        shown = {key for data in found for key in keys_at(data, path)}
        assert shown == wanted, f"{kind} examples at {'.'.join(path) or 'top level'}: missing {wanted - shown}"


def test_the_serving_examples_show_every_backend_kind():
    kinds = {model["kind"] for config in examples("serving") for model in config["models"].values()}
    assert kinds == {"vllm", "scripted", "openai"}


def test_every_shipped_mission_file_loads():
    files = [f for f in sorted((ROOT / "missions").rglob("*.yaml")) if "agents:" in f.read_text()]
    assert len(files) >= 3
    for path in files:
        assert load_mission(path).agents


def test_the_serve_config_file_points_at_the_builder_and_starts_serve_as_deploy_does():
    import serving
    from serving._deploy import SERVE_CONTROLLER_ENV

    config = yaml.safe_load((ROOT / "serving" / "serve_config.yaml").read_text())
    app = config["applications"][0]
    module, name = app["import_path"].split(":")
    assert module == "serving" and getattr(serving, name) is serving.app_builder
    assert app["args"]["config"] is None
    assert config["controller_options"]["runtime_env"]["env_vars"] == SERVE_CONTROLLER_ENV  # as `deploy` starts Serve


# -- shell -----------------------------------------------------------------------------------------------------
def shell_commands() -> Iterator[tuple[str, list[str]]]:
    """(where, tokens) of every command in the shell blocks; continuation lines joined, comments dropped."""
    for block in (b for b in BLOCKS if b.lang in SHELL):
        for n, line in enumerate(block.code.replace("\\\n", " ").splitlines()):
            tokens = shlex.split(line, comments=True)
            while tokens:
                cut = next((i for i, t in enumerate(tokens) if t in ("&&", ";", "||")), len(tokens))
                yield f"{block.name} line {n + 1}", tokens[:cut]
                tokens = tokens[cut + 1:]


def controlplane_args(tokens: list[str]) -> list[str] | None:
    for i, token in enumerate(tokens):
        if token == "controlplane" or token.endswith("/controlplane"):
            return tokens[i + 1:]
        if token == "-m" and tokens[i + 1:i + 2] == ["controlplane"]:
            return tokens[i + 2:]
    return None


def test_every_controlplane_command_in_the_docs_parses():
    parsed = 0
    for where, tokens in shell_commands():
        args = controlplane_args(tokens)
        if args is None:
            continue
        try:
            build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: `controlplane {' '.join(args)}` does not parse")
        parsed += 1
    assert parsed >= 8


def test_every_make_target_in_the_docs_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = [(where, tokens[1]) for where, tokens in shell_commands() if tokens[:1] == ["make"] and len(tokens) > 1]
    assert named and all(target in targets for _, target in named), named


# -- references ------------------------------------------------------------------------------------------------
REPO_PATH = re.compile(r"(?<![\w./~<>-])((?:\.ci|actors|benchmarks|controlplane|docs|memory|missions|serving|tests)"
                       r"/[\w./-]*[\w/])(?:::(\w+))?")
LINK = re.compile(r"\]\((?!https?:)((?:[^)#\s]*\.md)?)(?:#([^)\s]+))?\)")  # [text](page.md#anchor)


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_paths_and_test_names_in_the_docs_exist(doc):
    for path, test_name in REPO_PATH.findall(doc.read_text()):
        assert (ROOT / path).exists(), f"{doc.name} names {path}, which does not exist"
        if test_name:
            assert re.search(rf"^(async )?def {test_name}\(", (ROOT / path).read_text(), re.M), \
                f"{doc.name} names {path}::{test_name}, which does not exist"


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_links_and_anchors_in_the_docs_resolve(doc):
    for target, anchor in LINK.findall(doc.read_text()):
        path = (doc.parent / target).resolve() if target else doc
        assert path.exists(), f"{doc.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"{doc.name} links to {target}#{anchor}: no such heading"


FIGURE = re.compile(r"\d(?:[\d.,]*\d)?\s?(?:ms\b|tok/s|QPS|×)")


@pytest.mark.parametrize("doc", [d for d in DOC_FILES if d != FIGURES_PAGE], ids=lambda p: p.name)
def test_benchmark_figures_appear_only_on_the_benchmarks_page(doc):
    found = FIGURE.findall(doc.read_text())
    assert not found, f"{doc.name} carries the figures {found}: move them to docs/benchmarks.md"
