"""Shard-level extraction (Ray-free, reused by the Ray job) and the single-machine driver.

`decode_shard` turns a `ShardSpec` into one `ClipResult` per row; `process_shard` decodes and
writes one shard (or re-decodes only its failed clips with `retry_failed`); `run_extract` is the
`python -m pipeline extract` driver: plan, lock, clean temp files, a process pool over the shards
still to do, a progress bar, and `finalize`.
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.cli import sigint_ignored, stop_pool_on_interrupt
from pipeline.decode import ClipResult, FrameSpec, decode_video_clips
from pipeline.machine import machine_line
from pipeline.metadata import ClipRow, SubtitleStore, open_subtitles
from pipeline.plan import ExtractOptions, Plan, ShardSpec, iter_shards, load_or_create_plan
from pipeline.shard_format import shard_is_complete, shard_paths
from pipeline.shards import (
    cleanup_temp,
    failed_indices,
    finalize,
    rewrite_shard_with_retries,
    write_shard,
)

log = logging.getLogger("pipeline.extract")
_PARTIAL_SUFFIXES = (".part", ".tmp", ".ytdl", ".temp")


def frame_spec(options: ExtractOptions) -> FrameSpec:
    return FrameSpec(
        frames=options.frames,
        frame_size=options.frame_size,
        store_video=options.store_video,
        video_fps=options.video_fps,
        video_short_side=options.video_short_side,
        item_timeout=options.item_timeout or None,
    )


def resolve_video(videos_root: Path, row: ClipRow, layout: str) -> Path | None:
    """The file holding the row's frames, or None. Ids were checked to be single path components."""
    root = Path(videos_root)
    if layout == "clips":
        p = root / row.video_id / row.clip_id
        return p if p.is_file() else None
    p = root / f"{row.video_id}.mp4"
    if p.is_file():
        return p
    for m in sorted(glob.glob(os.path.join(glob.escape(str(root)), glob.escape(row.video_id) + ".*"))):
        if os.path.isfile(m) and not m.endswith(_PARTIAL_SUFFIXES):
            return Path(m)
    return None


def iter_decode_shard(
    spec: ShardSpec,
    videos_root: Path,
    options: ExtractOptions,
    subtitles: Mapping[str, str] | None,
    rows: list[ClipRow] | None = None,
    keep_middle: bool = True,
) -> Iterator[ClipResult]:
    """Yield one ClipResult per row (of `rows`, default all of the shard), one video group at a time.

    In the `full` layout each video is opened and decoded once for all of its clips in the shard.
    Without `keep_middle` the native-resolution middle frame is dropped (saves memory when no
    captioner needs it).
    """
    rows = spec.rows if rows is None else rows
    spec_f = frame_spec(options)
    groups: dict[str, list[ClipRow]] = {}
    for row in rows:
        if row.error is not None:
            yield ClipResult.failed(row, row.error)
            continue
        group = row.video_id if options.layout == "full" else f"{row.video_id}/{row.clip_id}"
        groups.setdefault(group, []).append(row)
    for group_rows in groups.values():
        first = group_rows[0]
        path = resolve_video(videos_root, first, options.layout)
        if path is None:
            where = f"{first.video_id}.*" if options.layout == "full" else f"{first.video_id}/{first.clip_id}"
            for row in group_rows:
                yield ClipResult.failed(row, f"open: video file not found: {where}")
            continue
        try:
            results = decode_video_clips(
                path, group_rows, spec_f, whole_file=options.layout == "clips", decoder=options.decoder
            )
        except Exception as e:  # a decoder bug on one file must not take the shard down
            log.exception("unexpected error decoding %s", path)
            results = [
                ClipResult.failed(r, f"decode: internal error {type(e).__name__}: {e}") for r in group_rows
            ]
        for res in results:
            if subtitles is not None:
                res.subtitle = subtitles.get(res.row.clip_id)
            if not keep_middle:
                res.middle = None
            yield res


def decode_shard(
    spec: ShardSpec, videos_root: Path, options: ExtractOptions, subtitles: Mapping[str, str] | None
) -> list[ClipResult]:
    """One ClipResult per row of the shard, in row order."""
    results = list(iter_decode_shard(spec, videos_root, options, subtitles))
    order = {r.index: i for i, r in enumerate(spec.rows)}
    return sorted(results, key=lambda r: order[r.row.index])


def process_shard(
    out: Path,
    spec: ShardSpec,
    videos_root: Path,
    options: ExtractOptions,
    subtitles: Mapping[str, str] | None,
    retry_failed: bool = False,
    on_clips: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """Decode and write one shard without a captioner; with retry_failed, redo only its failed clips."""
    started = time.time()

    def counted(it: Iterator[ClipResult]) -> Iterator[ClipResult]:
        for res in it:
            if on_clips is not None:
                on_clips(1)
            yield res

    if retry_failed and shard_is_complete(out, spec.index):
        redo = failed_indices(out, spec)
        rows = [r for r in spec.rows if r.index in redo]
        if on_clips is not None:
            on_clips(len(spec.rows) - len(rows))
        if not rows:  # nothing failed here: leave the complete shard as it is
            stats: dict[str, Any] = json.loads(shard_paths(out, spec.index)["stats"].read_text())
            return stats
        results = counted(iter_decode_shard(spec, videos_root, options, subtitles, rows, keep_middle=False))
        return rewrite_shard_with_retries(out, spec, results, None, options, started=started)
    results = counted(iter_decode_shard(spec, videos_root, options, subtitles, keep_middle=False))
    return write_shard(out, spec, results, None, options, started=started)


# ---------------------------------------------------------------------------------------------------
# Single-machine driver


@dataclass
class ExtractArgs:
    metadata: list[str]
    videos: Path
    out: Path
    options: ExtractOptions
    subtitles: Path | None = None
    retry_failed: bool = False
    overwrite: bool = False
    progress: bool = True


_worker_queue: Any = None


def _init_worker(q: Any) -> None:
    global _worker_queue
    _worker_queue = q
    logging.basicConfig(level=logging.WARNING)


def _tick(n: int) -> None:
    if _worker_queue is not None:
        _worker_queue.put(n)


def _worker(
    out: Path,
    spec: ShardSpec,
    videos: Path,
    options: ExtractOptions,
    subs: SubtitleStore | None,
    retry: bool,
) -> dict[str, Any]:
    return process_shard(out, spec, videos, options, subs, retry_failed=retry, on_clips=_tick)


class LockedError(RuntimeError):
    """Another extraction run holds the output directory."""


def lock_output(out: Path) -> Any:
    """Hold an exclusive flock on OUT/.lock (released by closing the returned file, or by the OS on exit)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        fh.close()
        raise LockedError(f"another extract run is using {out}") from e
    return fh


def shards_to_do(plan: Plan, retry: bool = False) -> tuple[set[int], int]:
    """(shard indices to process, clips in complete shards that are not processed again)."""
    todo: set[int] = set()
    done_clips = 0
    size = plan.options.shard_size
    for i in range(plan.num_shards):
        n = min(size, plan.total_clips - i * size)
        if not shard_is_complete(plan.out, i):
            todo.add(i)
        elif retry:
            todo.add(i)  # the worker decides which of its clips to redo
        else:
            done_clips += n
    return todo, done_clips


def run_extract(args: ExtractArgs) -> dict[str, Any]:
    """Run (or resume) an extraction; returns the summary. Raises PlanMismatchError / LockedError."""
    t0 = time.time()
    out = Path(args.out)
    lock = lock_output(out)
    try:
        plan = load_or_create_plan(
            out, args.metadata, args.videos, args.options, overwrite=args.overwrite, subtitles=args.subtitles
        )
        removed = cleanup_temp(out)
        if removed:
            log.info("removed %d temporary files of an interrupted run", removed)
        subs = None
        if args.subtitles is not None:
            subs, bad = open_subtitles(args.subtitles, out / "index", args.metadata)
            if bad:
                log.warning("subtitles: skipped %d malformed records", bad)
        todo, done_clips = shards_to_do(plan, args.retry_failed)
        bar = tqdm(
            total=plan.total_clips,
            initial=done_clips,
            unit="clip",
            disable=not args.progress,
            smoothing=0.1,
            desc="extract",
        )
        errors: list[str] = []
        processed = 0
        workers = args.options.workers
        try:
            if workers <= 1:
                for spec in iter_shards(plan, only=todo):
                    _init_worker(None)
                    try:
                        process_shard(
                            out,
                            spec,
                            args.videos,
                            args.options,
                            subs,
                            args.retry_failed,
                            on_clips=bar.update,
                        )
                    except Exception as e:  # one broken shard must not stop the others
                        log.exception("shard %d failed", spec.index)
                        errors.append(f"shard {spec.index}: {type(e).__name__}: {e}")
                    processed += len(spec.rows)
            else:
                processed = _run_pool(out, plan, todo, args, subs, bar, errors)
        finally:
            bar.close()
        wall = time.time() - t0
        summary_extra = {
            "wall_s": wall,
            "clips_processed": processed,
            "clips_per_s": processed / wall if wall > 0 else None,
            "workers": workers,
            "machine": machine_line(),  # where clips_per_s was measured
            "shard_errors": errors,
            "decoder": args.options.decoder,
        }
        finalize(out, plan, summary_extra)
        return json.loads((out / "summary.json").read_text())
    finally:
        lock.close()


def _run_pool(
    out: Path,
    plan: Plan,
    todo: set[int],
    args: ExtractArgs,
    subs: SubtitleStore | None,
    bar: tqdm,
    errors: list[str],
) -> int:
    ctx = mp.get_context("spawn")  # no fork of a process holding pyarrow/decoder threads
    q = ctx.Queue()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            try:
                bar.update(q.get(timeout=0.2))
            except queue.Empty:
                continue

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    processed = 0
    workers = args.options.workers
    try:
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(q,))
        with sigint_ignored():  # each submit starts a worker until there are `workers`
            for _ in range(workers):
                pool.submit(os.getpid)
        with pool, stop_pool_on_interrupt(pool):
            pending: dict[Future, ShardSpec] = {}

            def reap(block: bool) -> None:
                nonlocal processed
                done, _ = wait(list(pending), timeout=None if block else 0, return_when=FIRST_COMPLETED)
                for f in done:
                    spec = pending.pop(f)
                    processed += len(spec.rows)
                    try:
                        f.result()
                    except Exception as e:
                        log.error("shard %d failed: %s", spec.index, e)
                        errors.append(f"shard {spec.index}: {type(e).__name__}: {e}")

            for spec in iter_shards(plan, only=todo):
                # Bounded look-ahead: never hold more than 2 shards per worker of rows in memory.
                while len(pending) >= 2 * workers:
                    reap(block=True)
                try:
                    fut = pool.submit(_worker, out, spec, args.videos, args.options, subs, args.retry_failed)
                except BrokenProcessPool:
                    # A worker died (killed, out of memory): stop here; a rerun resumes the rest.
                    errors.append("worker pool broke (a worker process died); rerun to resume")
                    break
                pending[fut] = spec
            while pending:
                reap(block=True)
    finally:
        stop.set()
        th.join()
        while True:
            try:
                bar.update(q.get_nowait())
            except queue.Empty:
                break
    return processed
