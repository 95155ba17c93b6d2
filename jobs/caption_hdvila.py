"""Caption an HD-VILA-format corpus on a Ray cluster: middle frames -> captions -> Parquet/WebDataset shards.

On a running cluster (loopback example; see docs/JOB.md for production):

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/caption_hdvila.py --metadata 'meta/*.jsonl' --videos ROOT --out OUT \\
        --captioner ofa --checkpoint caption_large_best_clean.pt --bpe-dir BPE/

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

from jobs import caption_stages  # noqa: E402
from jobs.shard_stream import Progress, StreamConfig, estimate_shard_bytes, run_stream  # noqa: E402
from pipeline.extract import LockedError, lock_output, shards_to_do  # noqa: E402
from pipeline.metadata import open_subtitles  # noqa: E402
from pipeline.plan import (  # noqa: E402
    DECODERS,
    LAYOUTS,
    ExtractOptions,
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
    io = p.add_argument_group("inputs and outputs (CONTRACTS §1, §3)")
    io.add_argument("--metadata", nargs="+", required=True, help="HD-VILA metadata JSON-lines files or globs")
    io.add_argument("--videos", required=True, help="video root")
    io.add_argument("--out", required=True, help="output directory")
    io.add_argument("--layout", choices=LAYOUTS, default=_DEFAULTS.layout)
    io.add_argument("--subtitles", help="JSON lines {clip_id, text} or Parquet with the same columns")
    io.add_argument("--overwrite", action="store_true", help="start over: remove previous outputs in --out")
    ex = p.add_argument_group("extraction")
    ex.add_argument("--frames", type=int, default=_DEFAULTS.frames, help="sampled frames per clip (0: none)")
    ex.add_argument(
        "--frame-size", type=int, default=_DEFAULTS.frame_size, help="stored frame side (squashed)"
    )
    ex.add_argument("--shard-size", type=int, default=_DEFAULTS.shard_size, help="clips per shard")
    ex.add_argument("--store-video", action="store_true", help="also store K.mp4 (3 fps, short side 240)")
    ex.add_argument("--decoder", choices=DECODERS, default=_DEFAULTS.decoder)
    ex.add_argument(
        "--item-timeout",
        type=float,
        default=_DEFAULTS.item_timeout,
        help="seconds one video may take to decode; its clips then fail with 'decode: timeout' (0: no limit)",
    )
    cap = p.add_argument_group("captioner (CONTRACTS §4)")
    cap.add_argument(
        "--captioner", default="ofa", help="ofa | ofa-tiny-random | noop | package.module:factory"
    )
    cap.add_argument("--checkpoint", help="OFA checkpoint (.pt / .pt.xz), for --captioner ofa")
    cap.add_argument("--bpe-dir", help="OFA BPE directory, for --captioner ofa")
    cap.add_argument("--batch-size", type=int, help="images per captioner forward pass (captioner default)")
    cap.add_argument(
        "--caption-input-size",
        type=int,
        default=_STREAM.caption_input_size,
        help="squash middle frames to this size in the decode tasks (0: send native frames); with the "
        "captioner's own input size (OFA-large: 480) the captions are identical and 4x less data moves",
    )
    cap.add_argument(
        "--dtype", help="float32 | float16 | bfloat16 (captioner default: fp16 on GPU, fp32 on CPU)"
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
    return p


def captioner_options(args: argparse.Namespace, gpus: float) -> dict[str, Any]:
    """Only what the user gave is passed on, so each captioner keeps its own defaults."""
    opts: dict[str, Any] = {}
    for name in ("checkpoint", "bpe_dir", "batch_size", "dtype"):
        value = getattr(args, name)
        if value is not None:
            opts[name] = str(Path(value).resolve()) if name in ("checkpoint", "bpe_dir") else value
    if gpus > 0:
        opts["device"] = "cuda"
    return opts


def extract_options(args: argparse.Namespace) -> ExtractOptions:
    # What shapes the captions is recorded in the plan, so a rerun with another captioner is refused.
    extra = {"captioner": args.captioner, "checkpoint": args.checkpoint, "dtype": args.dtype}
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


def stream_config(args: argparse.Namespace, options: ExtractOptions) -> StreamConfig:
    resources = ray.cluster_resources()
    gpus = (
        args.captioner_gpus
        if args.captioner_gpus is not None
        else (1.0 if resources.get("GPU", 0) > 0 else 0.0)
    )
    cfg = StreamConfig(
        captioner=args.captioner,
        captioner_options=captioner_options(args, gpus),
        num_captioners=args.num_captioners,
        captioner_cpus=args.captioner_cpus if args.captioner_cpus is not None else _STREAM.captioner_cpus,
        captioner_gpus=gpus,
        decode_cpus=args.decode_cpus,
        caption_input_size=args.caption_input_size,
        max_inflight=args.max_inflight,
    )
    return cfg.resolve(
        resources.get("CPU", 0.0),
        resources.get("object_store_memory", 0.0),
        estimate_shard_bytes(options, args.caption_input_size),
    )


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    out = Path(args.out)
    try:
        lock = lock_output(out)  # one writer per output directory (released by the OS if the job is killed)
    except LockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _run_locked(args, out, t0)
    finally:
        lock.close()


def _run_locked(args: argparse.Namespace, out: Path, t0: float) -> int:
    options = extract_options(args)
    try:
        plan = load_or_create_plan(out, args.metadata, args.videos, options, args.overwrite, args.subtitles)
    except (PlanMismatchError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cleanup_temp(out)  # temporary files of a killed run; we hold the lock, so nobody else writes here
    todo, done_clips = shards_to_do(plan)
    subtitles = open_subtitles(Path(args.subtitles), out / "index")[0] if args.subtitles else None
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
                cfg = stream_config(args, options)
            except ValueError as e:  # the request does not fit the cluster
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(f"[caption-job] cluster {cluster}; {cfg}", flush=True)
            specs = iter_shards(plan, only=todo)
            t_stream = time.monotonic()
            result = run_stream(str(out), specs, args.videos, options, subtitles, cfg, progress)
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
    wall = time.monotonic() - t0
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
        "shards_already_complete": plan.num_shards - len(todo),
        "cluster": cluster,
        "decoder": options.decoder,
    }
    if result is not None:
        extra.update(
            decode_salvaged_shards=result.decode_salvaged,
            caption_salvaged_shards=result.caption_salvaged,
            captioner_actors_replaced=result.actors_replaced,
        )
    finalize(out, plan, extra)
    summary = json.loads((out / "summary.json").read_text())
    print("[caption-job] done; summary:", json.dumps(summary, indent=2, sort_keys=True), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Workers get the stage code by value, so they need no copy of jobs/ on their path.
    ray.cloudpickle.register_pickle_by_value(caption_stages)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
