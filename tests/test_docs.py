"""The docs stay true: no link leaves the repository, every option a documented command passes exists
in that entry point's --help, and the blocks marked `<!-- runnable: NAME -->` run as written.

The runnable blocks (except the Ray recipes, which tests/test_job_ray_recipe.py runs with their own
cluster) run in document order in one scratch directory that sees the repository's code, so a later
block may use an earlier block's outputs, as a reader following the docs would.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from doc_blocks import DOCS, REPO, Block, shell_blocks

from jobs.ray_cluster import free_port
from trainer.config import load_config, parse_overrides

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_MD_NAME = re.compile(r"(?<![\w/.-])([\w./-]*[A-Za-z_]\w*\.md)\b")


def test_no_doc_links_outside_the_repo() -> None:
    names = {p.name for p in DOCS}
    bad = []
    for doc in DOCS:
        text = doc.read_text()
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+://", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists() or REPO not in path.parents:
                bad.append(f"{doc.name}: link {target}")
        # A bare mention ("see FOO.md §2") must name a document of the repository too.
        for name in _MD_NAME.findall(text):
            if Path(name).name not in names and not (REPO / name).exists():
                bad.append(f"{doc.name}: mentions {name}")
    assert not bad, bad


def commands(block: Block) -> list[list[str]]:
    """The simple commands of a block: continuation lines joined, comments dropped, split at ; && |."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    out = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        cmd: list[str] = []
        for w in [*words, ";"]:
            if w in (";", "&&", "||", "|", "&"):
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def entry_point(cmd: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """(the argv that names a Python entry point of ours, the arguments after it), or None."""
    while cmd and re.match(r"^[A-Z_]+=", cmd[0]):  # VAR=value prefixes
        cmd = cmd[1:]
    if "--" in cmd:  # ray job submit ... -- python script ...
        cmd = cmd[cmd.index("--") + 1 :]
    if cmd and cmd[0].endswith("trainer/run.sh"):  # torchrun around python -m trainer.train
        return ("-m", "trainer.train"), cmd[1:]
    if len(cmd) < 2 or cmd[0] != "python":
        return None
    if cmd[1] == "-m":
        module = cmd[2]
        if module in ("pipeline", "trainer.data.retrieval") and len(cmd) > 3 and not cmd[3].startswith("-"):
            return ("-m", module, cmd[3]), cmd[4:]
        return ("-m", module), cmd[3:]
    if cmd[1].endswith(".py"):
        return (cmd[1],), cmd[2:]
    return None


@cache
def help_options(entry: tuple[str, ...]) -> frozenset[str]:
    proc = subprocess.run(
        [sys.executable, *entry, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120, env=_env()
    )
    assert proc.returncode == 0, f"{' '.join(entry)} --help: {proc.stderr[-1500:]}"
    return frozenset(re.findall(r"--[a-z][\w-]*", proc.stdout))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_AUTH_MODE="disabled", MPLBACKEND="Agg")
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _documented_calls() -> list[tuple[str, tuple[str, ...], list[str]]]:
    calls = []
    for doc in DOCS:
        for block in shell_blocks(doc):
            for cmd in commands(block):
                found = entry_point(cmd)
                if found is not None:
                    calls.append((f"{doc.name}:{block.line}", *found))
    return calls


def test_documented_options_exist() -> None:
    """Every `--option` a documented command passes to one of our argparse entry points exists."""
    calls = _documented_calls()
    assert len(calls) >= 10, calls  # the parser above still finds the docs' commands
    bad = []
    for where, entry, args in calls:
        if entry[0].endswith(".py") and not (REPO / entry[0]).is_file():
            bad.append(f"{where}: no such script {entry[0]}")
            continue
        if entry[-1] == "trainer.train":
            bad += [f"{where}: {e}" for e in _config_errors(args)]
            continue
        known = help_options(entry)
        for a in args:
            opt = a.strip("[]").split("=")[0]
            if opt.startswith("--") and "." in opt and entry[-1] == "trainer.evaluate":
                bad += [
                    f"{where}: {e}" for e in _config_errors(["--config", "", opt, "0"], overrides_only=True)
                ]
            elif opt.startswith("--") and opt not in known:
                bad.append(f"{where}: {' '.join(entry)} has no option {opt}")
    assert not bad, bad


_CODE = ("pipeline", "captioner", "trainer", "analysis", "synthetic", "jobs", "bench", "constraints", "docs")


def _config_errors(args: list[str], overrides_only: bool = False) -> list[str]:
    """A documented trainer command's config file and `--key value` overrides, loaded without touching
    any path they name (those are the user's)."""
    if overrides_only:
        try:
            parse_overrides(args[2:])
        except ValueError as e:
            return [str(e)]
        return []
    config = None if not args or args[0].startswith("--") else args[0]
    if config is not None and not (REPO / config).is_file():
        return [f"no such config {config}"]
    try:
        load_config(REPO / config if config else None, args[1:] if config else args)
    except (ValueError, TypeError) as e:
        return [str(e)]
    return []


def _runnable_blocks() -> list[Block]:
    return [b for doc in DOCS for b in shell_blocks(doc) if b.name and not b.name.startswith("ray-")]


def test_runnable_blocks_run_as_written(tmp_path: Path) -> None:
    blocks = _runnable_blocks()
    assert blocks, "no block is marked runnable"
    for name in _CODE:  # the code, seen from a scratch directory the commands may write into
        (tmp_path / name).symlink_to(REPO / name)
    # A free rendezvous port: torchrun's default 29500 may be taken by another run on this machine.
    env = {**_env(), "MASTER_PORT": str(free_port())}
    for block in blocks:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.text],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        where = f"{block.doc.relative_to(REPO)}:{block.line} ({block.name})"
        assert proc.returncode == 0, f"{where} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, f"{where}:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("name", ["readme-corpus-extract", "training-tiny"])
def test_expected_blocks_are_marked(name: str) -> None:
    assert name in {b.name for b in _runnable_blocks()}
