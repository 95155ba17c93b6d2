"""The command-line options every captioner shares, for `python -m captioner` and the caption job alike: one
definition, each captioner taking the ones it needs (registry `options`); OFA keeps --checkpoint/--bpe-dir."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_captioner_options(p: argparse.ArgumentParser) -> None:
    """The options every captioner shares (each takes the ones it needs; OFA keeps --checkpoint/--bpe-dir)."""
    g = p.add_argument_group("captioner (python -m captioner --list shows the names)")
    g.add_argument("--model-dir", type=Path, help="local Hugging Face model directory (blip, florence2)")
    g.add_argument("--checkpoint", type=Path, help="OFA caption checkpoint (.pt or .pt.xz), for ofa")
    g.add_argument(
        "--bpe-dir", type=Path, help="OFA's BPE directory (encoder.json, vocab.bpe, dict.txt), for ofa"
    )
    g.add_argument("--dtype", help="float32 | float16 | bfloat16 (default: float16 on CUDA, float32 on CPU)")
    g.add_argument("--batch-size", type=int, help="images per forward pass (default 16)")
    g.add_argument(
        "--beam", type=int, help="beam size (default: the family's own: OFA 5, BLIP 3, Florence-2 3)"
    )
    g.add_argument("--max-len", type=int, help="most caption tokens (default: the family's own)")
    g.add_argument("--seed", type=int, help="seed of a *-tiny-random captioner (default 0)")


OPTION_NAMES = ("model_dir", "checkpoint", "bpe_dir", "dtype", "batch_size", "beam", "max_len", "seed")


def captioner_options(args: argparse.Namespace) -> dict[str, Any]:
    """Only what the user gave, so each captioner keeps its own defaults (paths made absolute)."""
    opts: dict[str, Any] = {}
    for name in OPTION_NAMES:
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = str(Path(value).resolve()) if isinstance(value, Path) else value
    for name in ("batch_size", "beam", "max_len"):
        if name in opts and opts[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {opts[name]}")
    return opts
