"""The code blocks of README.md and docs/*.md, for the tests that run them.

A block's language and tag come from its info string: ```` ```yaml mission ````. The comment
`<!-- test: integration id=NAME -->` on the line before a block says how it runs: `integration` (it needs
Ray, Serve or vLLM; else it is a unit block) and an `id` that a test uses to check what the block did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*(?P<tag>[\w-]*)[ \t]*$")
MARKER = re.compile(r"^<!--\s*test:\s*(?P<words>.*?)\s*-->\s*$")
LAYERS = ("unit", "integration")


@dataclass(frozen=True, kw_only=True)
class Block:
    """One fenced code block of a doc."""

    path: Path
    """The doc it is in."""
    line: int
    """1-based line of its opening fence."""
    lang: str
    """The info string's first word: python, yaml, bash, text, ..."""
    tag: str
    """The info string's second word, e.g. `mission` in ```` ```yaml mission ````; may be empty."""
    layer: str
    """`unit` or `integration`, from the marker comment; `unit` without one."""
    id: str | None
    """The marker's `id=`, if any."""
    code: str
    """The block's text."""

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _marker(line: str, where: str) -> tuple[str, str | None]:
    words = MARKER.match(line).group("words").split()
    layer = next((w for w in words if w in LAYERS), "unit")
    ids = [w.removeprefix("id=") for w in words if w.startswith("id=")]
    unknown = [w for w in words if w not in LAYERS and not w.startswith("id=")]
    if unknown or len(ids) > 1:
        raise ValueError(f"{where}: test marker {line.strip()!r}: use `<!-- test: unit|integration [id=NAME] -->`")
    return layer, (ids[0] if ids else None)


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, in order."""
    lines = path.read_text().splitlines()
    blocks, n = [], 0
    while n < len(lines):
        fence = FENCE.match(lines[n])
        if fence is None:
            n += 1
            continue
        start = n
        end = next((k for k in range(n + 1, len(lines)) if lines[k].startswith("```")), None)
        if end is None:
            raise ValueError(f"{path.name}:{start + 1}: the code block is never closed")
        before = lines[start - 1] if start else ""
        where = f"{path.name}:{start + 1}"
        layer, block_id = _marker(before, where) if MARKER.match(before) else ("unit", None)
        blocks.append(Block(path=path, line=start + 1, lang=fence.group("lang"), tag=fence.group("tag"),
                            layer=layer, id=block_id, code="\n".join(lines[start + 1:end]) + "\n"))
        n = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in DOC_FILES for block in read_blocks(path)]


def python_blocks(layer: str) -> list[Block]:
    return [b for b in all_blocks() if b.lang == "python" and b.layer == layer]


def link_missions(folder: Path) -> Path:
    """A fresh directory for an example to run in, with the repository's `missions/` linked in."""
    (folder / "missions").symlink_to(ROOT / "missions", target_is_directory=True)
    return folder


def run_block(block: Block, code: str | None = None) -> dict:
    """Execute a Python block as a script; returns its globals."""
    scope: dict = {"__name__": "__doc_example__"}
    exec(compile(code if code is not None else block.code, block.name, "exec"), scope)
    return scope
