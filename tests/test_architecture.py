"""The house rules, read from the source with `ast` (docs/ARCHITECTURE.md): no import cycle anywhere,
imports placed inside functions included; rooms depend only downwards; the trainer's config is a leaf."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("pipeline", "captioner", "trainer", "analysis", "synthetic", "jobs")
# Which rooms each room may import (besides itself). tests/, bench/ and jobs/demo.py sit above all.
ALLOWED = {
    "pipeline": set(),
    "captioner": set(),
    "synthetic": {"pipeline"},
    "trainer": {"pipeline"},
    "analysis": {"trainer", "pipeline"},
    "jobs": {"pipeline", "captioner"},
}
TOP_FLOOR = {"jobs.demo"}  # the demo drives every stage, like a test does


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for room in ROOMS for p in sorted((REPO / room).rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an import name refers to (``a.b.C`` -> ``a.b`` when C is not a module)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(mod: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module ``mod`` imports, at any depth of the file (functions, TYPE_CHECKING blocks)."""
    out: set[str] = set()
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for n in names:
            target = resolve(n, modules)
            if target and target != mod:
                out.add(target)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        colour[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if colour.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in colour and (found := visit(m)):
                return found
        stack.pop()
        colour[n] = 2
        return None

    for n in sorted(graph):
        if n not in colour and (found := visit(n)):
            return found
    return None


def test_the_walker_sees_function_level_imports_and_cycles() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(g) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    modules = project_modules()
    # trainer.train imports its evaluation hook; the walker must find it wherever it is written
    assert "trainer.eval.retrieval" in imports_of("trainer.train", modules["trainer.train"], modules)


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_rooms_depend_only_downwards(graph: dict[str, set[str]]) -> None:
    wrong = []
    for mod, deps in graph.items():
        if mod in TOP_FLOOR:
            continue
        room = mod.split(".")[0]
        for d in deps:
            other = d.split(".")[0]
            if other != room and other not in ALLOWED[room]:
                wrong.append(f"{mod} -> {d}")
    assert not wrong, "\n".join(sorted(wrong))


def test_trainer_config_is_a_leaf(graph: dict[str, set[str]]) -> None:
    assert graph["trainer.config"] == set()


SHARD_MEMBER = re.compile(
    r"^\.?(mid\.jpg|cap\.txt|sub\.txt|stats\.json|f\d\d\.jpg)$|\.(mid\.jpg|cap\.txt|sub\.txt)$"
)
SHARD_OWNER = "pipeline.shard_format"


def test_only_the_shard_format_module_spells_shard_member_names() -> None:
    """Swapping or extending the shard format must mean editing one module (docs/ARCHITECTURE.md)."""
    wrong = []
    for mod, path in project_modules().items():
        if mod == SHARD_OWNER or mod.startswith("synthetic"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and SHARD_MEMBER.search(node.value)
            ):
                if not _is_prose(node.value):
                    wrong.append(f"{mod}:{node.lineno} {node.value!r}")
    assert not wrong, wrong


def _is_prose(value: str) -> bool:
    return "\n" in value or " " in value  # a docstring or message mentioning a member, not a name in use


def test_the_shard_rule_sees_a_spelled_member_name() -> None:
    assert (
        SHARD_MEMBER.search("mid.jpg") and SHARD_MEMBER.search("K.cap.txt") and SHARD_MEMBER.search("f07.jpg")
    )
    assert not SHARD_MEMBER.search("frame.jpg") and not SHARD_MEMBER.search("video.mp4 is a file")
