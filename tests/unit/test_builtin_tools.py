import ast
import os
from pathlib import Path

import pytest

from controlplane._core.tools import load_tool
from controlplane.builtin_tools import WORKSPACE_ENV, calculator, list_files, read_file, word_count


@pytest.mark.parametrize(("expression", "value"), [
    ("(120 - 20) * 0.15", 15.0), ("2 ** 10", 1024), ("7 // 2 + 7 % 2", 4), ("-3 + +1", -2),
    ("sqrt(16) + abs(-2) + round(2.567, 2) + max(1, 5) + min(3, 4)", 4.0 + 2 + 2.57 + 5 + 3),
])
def test_calculator_does_arithmetic(expression, value):
    assert calculator(expression) == pytest.approx(value)


@pytest.mark.parametrize(("expression", "why"), [
    ("__import__('os').system('ls')", "is not allowed"),
    ("open('/etc/passwd')", "is not allowed"),
    ("(1).__class__", "is not allowed"),
    ("x + 1", "is not allowed"),
    ("'a' * 3", "is not allowed"),
    ("9 ** 9 ** 9", "exponents above 100 are refused"),
    ("10 ** 100 * 10 ** 100 * 10 ** 100 * 10 ** 100", "too large"),
    ("1 / 0", "divides by zero"),
    ("(-8) ** 0.5", "complex"),
    ("1 +", "is not an arithmetic expression"),
    ("1" * 101, "limit is 100"),
])
def test_calculator_refuses_everything_but_bounded_arithmetic(expression, why):
    with pytest.raises(ValueError, match=why):
        calculator(expression)


def test_calculator_never_evaluates_code():
    import controlplane.builtin_tools as module

    tree = ast.parse(Path(module.__file__).read_text())
    names = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not names & {"eval", "exec", "compile"}


def test_word_count():
    assert word_count("one two\nthree") == {"words": 3, "characters": 13, "lines": 2}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "facts.md").write_text("Launch: October.\n")
    (root / "docs" / "brief.txt").write_text("Brief")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    monkeypatch.setenv(WORKSPACE_ENV, str(root))
    return root


def test_file_tools_read_and_list_inside_the_workspace(workspace):
    assert read_file("facts.md") == "Launch: October.\n" and read_file("docs/brief.txt") == "Brief"
    assert list_files() == ["docs/brief.txt", "facts.md"]
    assert list_files("*.md") == ["facts.md"]


@pytest.mark.parametrize("path", ["../secret.txt", "/etc/passwd", "docs/../../secret.txt", "link.txt"])
def test_read_file_refuses_paths_that_leave_the_workspace(workspace, path):
    with pytest.raises(PermissionError, match="outside the workspace"):
        read_file(path)


@pytest.mark.parametrize("pattern", ["../*", "/etc/*", "docs/../../*"])
def test_list_files_refuses_patterns_that_leave_the_workspace(workspace, pattern):
    with pytest.raises(PermissionError, match="leaves the workspace"):
        list_files(pattern)


def test_read_file_says_what_is_missing(workspace):
    with pytest.raises(FileNotFoundError, match=r"no file 'nope\.md' in the workspace; list_files"):
        read_file("nope.md")


def test_file_tools_without_a_workspace_say_how_to_set_one(monkeypatch):
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    with pytest.raises(RuntimeError, match=f"{WORKSPACE_ENV} is not set. Fix: set `workspace:`"):
        read_file("facts.md")


@pytest.mark.parametrize("name", ["calculator", "read_file", "list_files", "word_count"])
def test_each_builtin_is_a_tool_by_import_path(name):
    spec = load_tool(f"controlplane.builtin_tools:{name}", where="tools[0]").spec
    assert spec.description and spec.parameters["type"] == "object"
    for prop in spec.parameters["properties"].values():
        assert prop["type"] == "string" and prop["description"]
