"""`python -m pipeline extract ...`: frames, subtitles and shards of an HD-VILA-format corpus (docs/PIPELINE.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.extract import ExtractArgs, LockedError, run_extract
from pipeline.plan import DECODERS, LAYOUTS, ExtractOptions, PlanMismatchError

_D = ExtractOptions()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="extract middle/sampled frames into Parquet + WebDataset shards")
    ex.add_argument("--metadata", nargs="+", required=True, help="HD-VILA jsonl part files or globs")
    ex.add_argument("--videos", type=Path, required=True, help="video root (see --layout)")
    ex.add_argument("--layout", choices=LAYOUTS, default=_D.layout)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--subtitles", type=Path, default=None, help="jsonl or parquet of {clip_id, text}")
    ex.add_argument("--frames", type=int, default=_D.frames, help="sampled frames per clip (0: middle only)")
    ex.add_argument("--frame-size", type=int, default=_D.frame_size)
    ex.add_argument("--shard-size", type=int, default=_D.shard_size)
    ex.add_argument("--workers", type=int, default=_D.workers)
    ex.add_argument("--decoder", choices=DECODERS, default=_D.decoder)
    ex.add_argument(
        "--item-timeout",
        type=float,
        default=_D.item_timeout,
        help="seconds one video may take to decode; its clips then fail with 'decode: timeout' (0: no limit)",
    )
    ex.add_argument("--store-video", action="store_true", help="also store K.mp4 (3 fps, short side 240)")
    ex.add_argument(
        "--retry-failed", action="store_true", help="redo only the failed clips of complete shards"
    )
    ex.add_argument("--overwrite", action="store_true", help="discard previous outputs and start over")
    ex.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = ExtractOptions.from_args(args)
    try:
        options.validate()
        summary = run_extract(
            ExtractArgs(
                metadata=args.metadata,
                videos=args.videos,
                out=args.out,
                options=options,
                subtitles=args.subtitles,
                retry_failed=args.retry_failed,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
        )
    except (PlanMismatchError, LockedError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("complete", "total_clips", "counts", "wall_s", "clips_per_s")}))
    return 0 if summary["complete"] and not summary["shard_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
