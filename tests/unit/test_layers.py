"""The import order of the packages, read from the code: a module imports only from its own layer or below.

    controlplane.{errors, config, _core, ground modules} <- serving <- memory <- actors <- controlplane.cli

Lazy imports inside functions count too. `controlplane.config` and `controlplane._core` never import Ray.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [
    ("controlplane.errors", "controlplane._pydantic_errors"),
    ("controlplane.config",),
    ("controlplane._core", "controlplane._logfile", "controlplane._model_cache", "controlplane._ray_errors",
     "controlplane._rundir", "controlplane._setup", "controlplane._trace_file", "controlplane._tracing"),
    ("serving",),
    ("memory",),
    ("actors",),
    ("controlplane.cli", "controlplane.__main__"),
]
PURE = ("controlplane.config", "controlplane._core")


def layer_of(module: str) -> int | None:
    """The layer of a module of this project; None for third-party modules and the `controlplane` façade."""
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


SOURCES = sorted(p for pkg in ("controlplane", "serving", "memory", "actors") for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path):
    module = module_name(path)
    own = layer_of(module)
    if own is None:  # the controlplane façade re-exports config and errors only
        assert all(layer_of(name) in (None, 0, 1) for name in imports(path)), module
        return
    upward = [name for name in imports(path) if (layer_of(name) or 0) > own]
    assert not upward, f"{module} (layer {own}) imports upward: {upward}"


@pytest.mark.parametrize("path", [p for p in SOURCES if module_name(p).startswith(PURE)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_logic_never_imports_ray(path):
    assert not [name for name in imports(path) if name == "ray" or name.startswith("ray.")]


def test_nothing_imports_the_cli():
    importers = [module_name(p) for p in SOURCES if not module_name(p).startswith("controlplane.cli")
                 and module_name(p) != "controlplane.__main__"
                 and any(name.startswith("controlplane.cli") for name in imports(p))]
    assert importers == []


def test_test_modules_have_unique_basenames_across_layers():
    """pytest's default import mode refuses two test modules of one name (CI stops at collection)."""
    from collections import Counter
    from pathlib import Path

    names = Counter(path.name for path in Path(__file__).resolve().parents[1].rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
