"""Caption an HD-VILA-format corpus on a Ray cluster: middle frames -> captions -> Parquet/WebDataset shards.

On a running cluster (loopback example; see docs/JOB.md for production):

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/caption_hdvila.py --metadata 'meta/*.jsonl' --videos ROOT --out OUT \\
        --captioner ofa --checkpoint caption_large_best_clean.pt --bpe-dir BPE/
    (or e.g. --captioner florence2 --model-dir Florence-2-base/ --dtype bfloat16 --batch-size 64)

Without a cluster, `python jobs/caption_hdvila.py ...` starts an embedded single-node Ray on 127.0.0.1
(`--num-cpus`, default all cores) and stops it at the end. The output directory is CONTRACTS §3, the
same as `python -m pipeline extract` plus captions. Resubmitting with the same arguments finishes only
the shards that are not complete; `captions.parquet` and `summary.json` appear once all are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# `python jobs/caption_hdvila.py` puts jobs/ (not the repo root) on sys.path; under `ray job submit
# --working-dir .` the root is the cwd. Either way `jobs.*` must import.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from jobs import ray_cluster  # noqa: E402  (imports no Ray)

if __name__ == "__main__":
    # Ray reads some settings when it is imported, so the embedded mode's loopback settings go first.
    ray_cluster.prepare_embedded_env(sys.argv[1:])

import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402

import captioner  # noqa: E402  (imports no model code)
from captioner.options import add_captioner_options, captioner_options  # noqa: E402
from jobs import caption_stages  # noqa: E402
from jobs.shard_stream import Progress, StreamConfig, StreamResult, estimate_shard_bytes, run_stream  # noqa: E402
from pipeline.cli import UserError, run_cli, show_defaults  # noqa: E402
from pipeline.extract import LockedError, lock_output, shards_to_do  # noqa: E402
from pipeline.inputs import check_extract_inputs  # noqa: E402
from pipeline.machine import machine_line  # noqa: E402
from pipeline.metadata import open_subtitles  # noqa: E402
from pipeline.plan import (  # noqa: E402
    ExtractOptions,
    Plan,
    PlanMismatchError,
    iter_shards,
    load_or_create_plan,
)
from pipeline.shards import cleanup_temp, finalize  # noqa: E402

_DEFAULTS = ExtractOptions()
_STREAM = StreamConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobs/caption_hdvila.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ExtractOptions.add_arguments(p)
    p.add_argument(
        "--captioner",
        default="ofa",
        help="registered name (python -m captioner --list) or package.module:factory (default: ofa)",
    )
    add_captioner_options(p)
    p.add_argument(
        "--caption-input-size",
        default=str(_STREAM.caption_input_size),
        help="squash middle frames to N x N in the decode tasks, as the captioner's own first step (0: send "
        "native frames; auto: the captioner's stated input size, e.g. OFA-large 480): the same captions, "
        "~4x less data moves. A size other than the captioner's own is refused",
    )
    ray_g = p.add_argument_group("Ray")
    ray_g.add_argument(
        "--address",
        help="GCS address of a Ray cluster to join (HOST:6379 or auto; default: RAY_ADDRESS, which `ray job submit` sets; else an embedded Ray)",
    )
    ray_g.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all cores)")
    ray_g.add_argument("--num-captioners", type=int, default=_STREAM.num_captioners, help="captioner actors")
    ray_g.add_argument(
        "--captioner-cpus",
        type=float,
        help="CPUs per captioner actor (default 1; 0 for a model-free captioner)",
    )
    ray_g.add_argument(
        "--captioner-gpus", type=float, help="GPUs per captioner actor (default: 1 when the cluster has GPUs)"
    )
    ray_g.add_argument("--decode-cpus", type=float, default=_STREAM.decode_cpus, help="CPUs per decode task")
    ray_g.add_argument(
        "--max-inflight",
        type=int,
        default=_STREAM.max_inflight,
        help="shards in flight (0: from the cluster)",
    )
    return show_defaults(p)


def caption_input_size(args: argparse.Namespace, stated: int | None) -> int:
    """--caption-input-size resolved against the captioner's stated input size; a size that would change the
    captions of a captioner that states its own is a ValueError."""
    value = str(args.caption_input_size)
    if value == "auto":
        return stated or 0
    if not value.isdigit():
        raise ValueError(f"--caption-input-size must be a size in pixels, 0 or auto, got {value!r}")
    size = int(value)
    if size > 0 and stated is not None and size != stated:
        raise ValueError(
            f"--caption-input-size {size}: captioner {args.captioner!r} takes {stated} x {stated} frames, so "
            f"another size would change its captions (use {stated}, auto or 0)"
        )
    return size


def check_captioner(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """The captioner's options and the resolved --caption-input-size, checked without loading a model
    (ValueError: refuse before any work)."""
    options = captioner_options(args)
    return options, caption_input_size(args, captioner.preflight(args.captioner, **options))


def extract_options(args: argparse.Namespace) -> ExtractOptions:
    # What shapes the captions is recorded in the plan, so a rerun with another captioner is refused.
    # Options added later are recorded only when given, so plans of earlier runs still match on resubmit.
    later = {"model_dir": args.model_dir, "beam": args.beam, "max_len": args.max_len, "seed": args.seed}
    extra = {
        "captioner": args.captioner,
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "dtype": args.dtype,
        **{k: str(v) if isinstance(v, Path) else v for k, v in later.items() if v is not None},
    }
    # workers is the pipeline CLI's process pool; Ray schedules the job's decode tasks itself.
    return ExtractOptions.from_args(args, workers=1, extra=extra)


def connect(args: argparse.Namespace) -> Path | None:
    """Join the cluster (--address or RAY_ADDRESS, as `ray job submit` sets it), or start an embedded
    single-node Ray on 127.0.0.1. Returns the embedded Ray's private temp dir (None when joining)."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return None
    temp_dir = ray_cluster.short_temp_dir()
    ray.init(
        num_cpus=args.num_cpus or os.cpu_count() or 1,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        log_to_driver=True,
    )
    return temp_dir


def stream_config(
    args: argparse.Namespace, options: ExtractOptions, cap_options: dict[str, Any], caption_size: int
) -> StreamConfig:
    resources = ray.cluster_resources()
    gpus = (
        args.captioner_gpus
        if args.captioner_gpus is not None
        else (1.0 if resources.get("GPU", 0) > 0 else 0.0)
    )
    cfg = StreamConfig(
        captioner=args.captioner,
        captioner_options={**cap_options, **({"device": "cuda"} if gpus > 0 else {})},
        num_captioners=args.num_captioners,
        captioner_cpus=args.captioner_cpus if args.captioner_cpus is not None else _STREAM.captioner_cpus,
        captioner_gpus=gpus,
        decode_cpus=args.decode_cpus,
        caption_input_size=caption_size,
        max_inflight=args.max_inflight,
    )
    return cfg.resolve(
        resources.get("CPU", 0.0),
        resources.get("object_store_memory", 0.0),
        estimate_shard_bytes(options, caption_size),
    )


def check_args(args: argparse.Namespace) -> None:
    """UserError (one line) for a bad extraction argument or input, before Ray starts or OUT is made.
    The captioner's own arguments are checked by the captioner package."""
    try:
        extract_options(args).validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    check_extract_inputs(args.metadata, args.videos, args.layout, args.out, args.subtitles)


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    out = Path(args.out)
    check_args(args)
    try:  # in the driver, before the output is touched or Ray (and so any captioner actor) starts
        cap_options, caption_size = check_captioner(args)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        lock = lock_output(out)  # one writer per output directory (released by the OS if the job is killed)
    except LockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _run_locked(args, out, t0, cap_options, caption_size)
    finally:
        lock.close()


def summary_fields(
    wall: float,
    stream_s: float,
    progress: Progress,
    plan: Plan,
    todo: int,
    cluster: dict[str, float],
    options: ExtractOptions,
    result: StreamResult | None,
) -> dict[str, Any]:
    """What this run adds to summary.json: its rates, the cluster, the machine and the fault counts."""
    extra: dict[str, Any] = {
        "runner": "ray",
        "captioner_this_run": result.captioner_id if result is not None else None,
        "wall_s": round(wall, 3),
        "clips_processed": progress.done_clips,
        "clips_per_s": round(progress.done_clips / wall, 3) if wall > 0 else None,
        # Excludes Ray start-up and planning: the steady-state rate of the streaming stages.
        "stream_s": round(stream_s, 3),
        "stream_clips_per_s": round(progress.done_clips / stream_s, 3) if stream_s > 0 else None,
        "shards_this_run": progress.done_shards,
        "shards_already_complete": plan.num_shards - todo,
        "cluster": cluster,
        "machine": f"driver: {machine_line()}",  # the rates above are the cluster's; this names its head
        "decoder": options.decoder,
    }
    if result is not None:
        extra.update(
            decode_salvaged_shards=result.decode_salvaged,
            caption_salvaged_shards=result.caption_salvaged,
            captioner_actors_replaced=result.actors_replaced,
            decode_tasks_cancelled=result.decode_cancelled,
        )
    return extra


def _run_locked(
    args: argparse.Namespace, out: Path, t0: float, cap_options: dict[str, Any], caption_size: int
) -> int:
    options = extract_options(args)
    try:
        plan = load_or_create_plan(out, args.metadata, args.videos, options, args.overwrite, args.subtitles)
    except (PlanMismatchError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cleanup_temp(out)  # temporary files of a killed run; we hold the lock, so nobody else writes here
    todo, done_clips = shards_to_do(plan)
    try:
        subtitles = (
            open_subtitles(Path(args.subtitles), out / "index", args.metadata)[0] if args.subtitles else None
        )
    except ValueError as e:  # a subtitles file of the wrong format (AnnotationError)
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = Progress(
        total_clips=plan.total_clips,
        todo_clips=plan.total_clips - done_clips,
        todo_shards=len(todo),
    )
    print(
        f"[caption-job] plan: {plan.total_clips} clips in {plan.num_shards} shards of {options.shard_size}; "
        f"{len(todo)} shards to do ({plan.num_shards - len(todo)} already complete)",
        flush=True,
    )
    result = None
    cluster: dict[str, float] = {}
    stream_s = 0.0
    if todo:
        temp_dir = connect(args)  # only now: a resubmit with nothing left to do starts no Ray
        try:
            cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
            try:
                cfg = stream_config(args, options, cap_options, caption_size)
            except ValueError as e:  # the request does not fit the cluster
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(f"[caption-job] cluster {cluster}; {cfg}", flush=True)
            specs = iter_shards(plan, only=todo)
            t_stream = time.monotonic()
            result = run_stream(str(out), specs, str(args.videos), options, subtitles, cfg, progress)
            stream_s = time.monotonic() - t_stream
        finally:
            ray.shutdown()
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)
        if result.unwritten:
            print(
                f"[caption-job] {len(result.unwritten)} shard(s) could not be written; resubmit the same "
                f"command to retry them: {sorted(result.unwritten)}",
                file=sys.stderr,
                flush=True,
            )
            return 1
    extra = summary_fields(
        time.monotonic() - t0, stream_s, progress, plan, len(todo), cluster, options, result
    )
    finalize(out, plan, extra)
    summary = json.loads((out / "summary.json").read_text())
    print("[caption-job] done; summary:", json.dumps(summary, indent=2, sort_keys=True), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 done, 1 some shard unwritten, 2 a user error (one line), 130 interrupted."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # Workers get the stage code by value, so they need no copy of jobs/ on their path.
    ray.cloudpickle.register_pickle_by_value(caption_stages)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
