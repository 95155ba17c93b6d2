"""Whole-file replacement: readers see the old file or the complete new one, never a part of it."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a hidden temp file in the same directory and one rename (a kill mid-write
    leaves at most a stray `.NAME.tmp-PID`, which no reader looks at)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
