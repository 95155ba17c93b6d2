"""`python -m pipeline extract ...`: frames, subtitles and shards of an HD-VILA-format corpus (docs/PIPELINE.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pipeline.cli import UserError, run_cli, show_defaults
from pipeline.extract import ExtractArgs, LockedError, run_extract
from pipeline.inputs import check_extract_inputs
from pipeline.plan import ExtractOptions, PlanMismatchError

_D = ExtractOptions()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="extract middle/sampled frames into Parquet + WebDataset shards")
    ExtractOptions.add_arguments(ex)
    ex.add_argument("--workers", type=int, default=_D.workers, help="decoding processes")
    ex.add_argument(
        "--retry-failed", action="store_true", help="redo only the failed clips of complete shards"
    )
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    return show_defaults(ap)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: exit status 0 done, 1 some shard failed to write, 2 a user error, 130 interrupted."""
    return run_cli(_extract, argv)


def _extract(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = ExtractOptions.from_args(args)
    try:
        options.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    check_extract_inputs(args.metadata, args.videos, options.layout, args.out, args.subtitles)
    try:
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
    except (PlanMismatchError, LockedError) as e:
        raise UserError(str(e)) from None
    print(json.dumps({k: summary[k] for k in ("complete", "total_clips", "counts", "wall_s", "clips_per_s")}))
    return 0 if summary["complete"] and not summary["shard_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
