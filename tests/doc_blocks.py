"""The shell blocks of README.md and docs/*.md, and which of them are marked runnable.

A block is runnable when the line before its ```bash fence is `<!-- runnable: NAME -->`; the docs
tests run those blocks as written (tests/test_docs.py, tests/test_job_ray_recipe.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_MARK = re.compile(r"^<!-- runnable: ([\w-]+) -->$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    name: str | None  # the runnable mark, or None
    text: str


def shell_blocks(doc: Path) -> list[Block]:
    """Every ```bash / ```sh block of `doc`, with the runnable mark just above it (if any)."""
    lines = doc.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() in ("```bash", "```sh", "```shell"):
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            mark = _MARK.match(lines[start - 1].strip()) if start > 0 else None
            blocks.append(
                Block(doc, start + 1, mark.group(1) if mark else None, "\n".join(lines[start + 1 : j]))
            )
            i = j
        i += 1
    return blocks


def runnable(name: str) -> Block:
    """The one block marked `name` in the docs."""
    found = [b for doc in DOCS for b in shell_blocks(doc) if b.name == name]
    assert len(found) == 1, f"{len(found)} blocks marked runnable: {name}"
    return found[0]
