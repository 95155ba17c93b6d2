"""Run an entry point as a user would (a subprocess) and check the error surface of pipeline/cli.py:
a user error is exit 2 with one `error:` line on stderr, no traceback, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    # As a user's shell: not what an in-process --no-progress run of an earlier test set (os.environ).
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env.update(
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONDONTWRITEBYTECODE="1",
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


def run_entry(
    args: Sequence[str | Path], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`python ARGS...` (the venv's interpreter) in `cwd`, output captured as text."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd or REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tree(root: Path) -> set[str]:
    """Every path under `root` (relative), to show that a refused command wrote nothing."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one non-empty stderr line starting `error:`, holding every needle; returns it."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
