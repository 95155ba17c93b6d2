"""Caption image files from the command line.

    python -m captioner --checkpoint caption_large_best_clean.pt --bpe-dir BPE/ a.jpg b.png
    python -m captioner --captioner florence2 --model-dir Florence-2-base/ --dtype bfloat16 --beam 3 a.jpg
    python -m captioner --captioner ofa-tiny-random --jsonl frames/*.jpg
    python -m captioner --list

Plain output is one "<path>\\t<caption>" line per image, in input order; --jsonl writes one
{"image", "caption", "error"} object per line instead. An unreadable image fails alone (reported, exit code 1);
the others are still captioned. Unusable captioner options (a missing model directory or checkpoint, an empty
BPE directory, an option the captioner does not take) are refused before any work: one line, exit code 2.
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
from captioner.options import add_captioner_options, captioner_options


def list_captioners() -> str:
    width = max(len(name) for name, _ in captioner.describe())
    return "\n".join(f"{name:<{width}}  {needs}" for name, needs in captioner.describe())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m captioner", description="Caption images (one line per image)."
    )
    p.add_argument("images", nargs="*", type=Path, help="image files (anything PIL reads)")
    p.add_argument("--list", action="store_true", help="list the captioner names and what each needs")
    p.add_argument(
        "--captioner",
        default="ofa",
        help="registered name (see --list) or 'package.module:factory' (default: ofa)",
    )
    add_captioner_options(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--jsonl", action="store_true", help="write JSON lines {image, caption, error}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not args.list and not args.images:
        p.error("give image files (or --list)")
    return args


def build(args: argparse.Namespace, options: dict[str, Any]) -> captioner.Captioner:
    if args.device is not None:
        options = {**options, "device": args.device}
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
    if args.list:
        print(list_captioners())
        return 0
    try:  # a user's mistake (missing file, wrong directory, unknown option) is refused before any work
        options = captioner_options(args)
        captioner.preflight(args.captioner, **options)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cap = build(args, options)
    batch_size = options.get("batch_size", 16)
    progress = not args.no_progress and len(args.images) > batch_size
    failed = 0
    for path, text, err in caption_files(cap, args.images, batch_size, progress):
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
