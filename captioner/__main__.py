"""Caption image files from the command line.

    python -m captioner --checkpoint caption_large_best_clean.pt --bpe-dir BPE/ a.jpg b.png
    python -m captioner --captioner ofa-tiny-random --jsonl frames/*.jpg

Plain output is one "<path>\\t<caption>" line per image, in input order; --jsonl writes one
{"image", "caption", "error"} object per line instead. An unreadable image fails alone (reported, exit code 1);
the others are still captioned.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

import captioner


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m captioner", description="Caption images (one line per image)."
    )
    p.add_argument("images", nargs="+", type=Path, help="image files (anything PIL reads)")
    p.add_argument(
        "--captioner",
        default="ofa",
        help=f"registered name ({', '.join(captioner.available())}) or 'package.module:factory' (default: ofa)",
    )
    p.add_argument(
        "--checkpoint", type=Path, help="OFA caption checkpoint (.pt or .pt.xz); required for 'ofa'"
    )
    p.add_argument(
        "--bpe-dir", type=Path, help="directory with encoder.json, vocab.bpe, dict.txt; required for 'ofa'"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", help="float32 | float16 | bfloat16 (default: float16 on CUDA, float32 on CPU)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="seed of ofa-tiny-random")
    p.add_argument("--jsonl", action="store_true", help="write JSON lines {image, caption, error}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if args.captioner == "ofa" and (args.checkpoint is None or args.bpe_dir is None):
        p.error("--captioner ofa needs --checkpoint and --bpe-dir (or use --captioner ofa-tiny-random)")
    return args


def build(args: argparse.Namespace) -> captioner.Captioner:
    options: dict[str, Any] = {}
    if args.captioner == "ofa":
        options = {"checkpoint": args.checkpoint, "bpe_dir": args.bpe_dir, "batch_size": args.batch_size}
        options |= {"device": args.device, "dtype": args.dtype}
    elif args.captioner == "ofa-tiny-random":
        options = {
            "seed": args.seed,
            "batch_size": args.batch_size,
            "device": args.device or "cpu",
            "dtype": args.dtype,
        }
    return captioner.load(args.captioner, **options)


def read_image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def caption_files(cap: captioner.Captioner, paths: Sequence[Path], batch_size: int, progress: bool = True):
    """Yield (path, caption or None, error or None) in input order; a failing item never stops the others."""
    with tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            loaded: list[tuple[Path, np.ndarray | None, str | None]] = []
            for path in chunk:
                try:
                    loaded.append((path, read_image(path), None))
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    loaded.append((path, None, f"cannot read image: {e}"))
            good = [(p, im) for p, im, _ in loaded if im is not None]
            captions: dict[Path, tuple[str | None, str | None]] = {}
            try:
                for (p, _), text in zip(good, cap.caption([im for _, im in good])):
                    captions[p] = (text, None)
            except Exception:  # isolate the failing item(s): retry one by one
                for p, im in good:
                    try:
                        captions[p] = (cap.caption([im])[0], None)
                    except Exception as e:  # noqa: BLE001 - recorded per item, the run goes on
                        captions[p] = (None, f"captioning failed: {type(e).__name__}: {e}")
            for path, image, err in loaded:
                yield (path, None, err) if image is None else (path, *captions[path])
            bar.update(len(chunk))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cap = build(args)
    progress = not args.no_progress and len(args.images) > args.batch_size
    failed = 0
    for path, text, err in caption_files(cap, args.images, args.batch_size, progress):
        failed += err is not None
        if args.jsonl:
            print(
                json.dumps({"image": str(path), "caption": text, "error": err}, ensure_ascii=False),
                flush=True,
            )
        elif err is None:
            print(f"{path}\t{text}", flush=True)
        else:
            print(f"{path}: {err}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(args.images)} images failed (captioner {cap.id})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
