"""Whole-file replacement, the one helper every room uses: readers see the old file or the complete new
one, never a part of it. A kill mid-write leaves at most a hidden `.NAME.tmp-TOKEN`, which no reader
looks at (the shard writer's `cleanup_temp` removes those in shard directories)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def temp_path(path: Path, token: str | None = None) -> Path:
    """The hidden temp name beside ``path`` (same directory, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{token or os.getpid()}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # makes the rename itself durable
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temp path to write (with any library: np.save, torch.save, safetensors); on success it
    replaces ``path`` in one rename, on error it is removed. ``durable`` also fsyncs file and directory
    (checkpoints: a power loss must not leave a renamed but empty file)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | Path, data: bytes, durable: bool = False) -> None:
    with atomic_output(path, durable) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str, durable: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), durable)
