"""Driver-side streaming scheduler: shards flow decode -> caption -> write with a bounded window.

Why Ray tasks + actors and not Ray Data: the unit of output, resume and failure is the *shard*
(CONTRACTS §3: a shard is complete when its stats.json exists), and a shard needs its decode results,
its captions and its writer to meet again. A windowed `ray.wait` loop over per-shard object refs keeps
exactly that structure: at most `max_inflight` shards exist between the plan and the disk (memory stays
bounded however large the corpus), decode tasks and captioner calls overlap, and a failure is handled
for one shard without touching the others. docs/JOB.md has the longer argument.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError

from jobs import caption_stages as stages
from pipeline.plan import ExtractOptions, ShardSpec


@dataclass
class StreamConfig:
    """Resources and limits of one streaming run (the one place for their defaults)."""

    captioner: str = "ofa"
    captioner_options: dict[str, Any] = field(default_factory=dict)
    num_captioners: int = 1
    captioner_cpus: float = 1.0  # per actor
    captioner_gpus: float = 0.0  # per actor: 1 on GPU clusters
    decode_cpus: float = 1.0  # per decode task
    caption_input_size: int = 0  # >0: decode tasks squash middle frames to this size (OFA-large: 480)
    write_cpus: float = 1.0  # per writer task
    max_inflight: int = 0  # shards between plan and disk; 0: derived from the cluster (see resolve)
    max_retries: int = 3  # Ray retries of a task whose worker died
    max_actor_restarts: int = 3  # restarts of a crashed captioner actor (its calls are retried)
    max_actor_replacements: int = 4  # fresh actors started after one died for good
    progress_every_s: float = 5.0
    decode_slack_s: float = 30.0  # added to a decode task's time budget (worker start, opens, puts)

    def resolve(
        self, cluster_cpus: float, object_store_bytes: float = 0.0, shard_bytes: float = 0.0
    ) -> StreamConfig:
        """Check the request fits the cluster and fill in the derived window.

        The automatic window keeps every decode slot busy while each captioner has one shard running and
        one queued and one shard is being written, but never lets the in-flight shards' frames
        (`shard_bytes` each, estimated) take more than half of the object store.
        """
        if self.num_captioners < 1:
            raise ValueError("num_captioners must be >= 1")
        if self.decode_cpus <= 0 or self.write_cpus <= 0:
            raise ValueError("decode_cpus and write_cpus must be > 0")
        free = cluster_cpus - self.num_captioners * self.captioner_cpus
        if free < max(self.decode_cpus, self.write_cpus):
            raise ValueError(
                f"the cluster has {cluster_cpus:g} CPUs; {self.num_captioners} captioner(s) x "
                f"{self.captioner_cpus:g} CPU leave {free:g}, less than one decode task needs "
                f"({self.decode_cpus:g}); lower --num-captioners / --captioner-cpus or add CPUs"
            )
        if self.max_inflight <= 0:
            decoders = max(1, math.floor(free / self.decode_cpus))
            self.max_inflight = decoders + 2 * self.num_captioners + 1
            if object_store_bytes > 0 and shard_bytes > 0:
                self.max_inflight = max(
                    2, min(self.max_inflight, int(0.5 * object_store_bytes / shard_bytes))
                )
        return self


def estimate_shard_bytes(
    options: ExtractOptions, caption_size: int = 0, native_pixels: int = 1280 * 720
) -> float:
    """Object-store bytes of one decoded shard: stored frames plus the native middle frame per clip
    (HD-VILA videos are mostly 720p, hence the default; K.mp4 bytes are small next to these)."""
    middle_pixels = caption_size**2 if caption_size > 0 else native_pixels
    per_clip = (options.frames + 1) * options.frame_size**2 * 3 + middle_pixels * 3
    return float(options.shard_size * per_clip)


@dataclass
class Progress:
    """Counts for the live progress line and the summary."""

    total_clips: int  # clips in the plan
    todo_clips: int  # clips of the shards this run has to do
    done_clips: int = 0
    failed_clips: int = 0
    done_shards: int = 0
    todo_shards: int = 0
    started: float = field(default_factory=time.monotonic)
    _last_print: float = 0.0

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done_clips / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = self.todo_clips - self.done_clips
        eta = _hms(left / rate) if rate > 0 else "?"
        skipped = self.total_clips - self.todo_clips
        pct = 100.0 * self.done_clips / self.todo_clips if self.todo_clips else 100.0
        return (
            f"[caption-job] clips {self.done_clips}/{self.todo_clips} ({pct:.1f}%)"
            f" | {rate:.2f} clips/s | failed {self.failed_clips}"
            f" | shards {self.done_shards}/{self.todo_shards}"
            + (f" | {skipped} clips already done" if skipped else "")
            + f" | ETA {eta}"
        )

    def maybe_print(self, every_s: float, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_print >= every_s:
            self._last_print = now
            print(self.line(), flush=True)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class _Shard:
    spec: ShardSpec
    # Object refs (typed Any: Ray's stubs do not model num_returns=3).
    results: Any = None
    middles: Any = None
    captions: Any = None
    salvaged: bool = False
    started: float = field(default_factory=time.time)


@dataclass
class StreamResult:
    captioner_id: str
    written: int  # shards written by this run
    unwritten: dict[int, str]  # shard -> why it could not be written
    decode_salvaged: int = 0  # shards re-decoded clip by clip after their task kept failing
    caption_salvaged: int = 0  # shards re-captioned clip by clip after their call kept failing
    actors_replaced: int = 0
    decode_cancelled: int = 0  # decode tasks cancelled for running past their time budget


class _CaptionerPool:
    """A fixed-size pool of captioner actors; each call goes to the actor with the fewest pending calls.
    A crashed actor is restarted by Ray (its calls retried); one that died for good is replaced."""

    def __init__(self, cfg: StreamConfig) -> None:
        self.cfg = cfg
        self._cls = ray.remote(stages.CaptionerWorker).options(
            num_cpus=cfg.captioner_cpus,
            num_gpus=cfg.captioner_gpus,
            max_restarts=cfg.max_actor_restarts,
            max_task_retries=cfg.max_retries,
        )
        self.actors = [self._new() for _ in range(cfg.num_captioners)]
        self.pending = [0] * len(self.actors)
        self.replaced = 0
        # Loads every model now, so a bad checkpoint fails the job before any decoding starts.
        ids = ray.get([a.captioner_id.remote() for a in self.actors])
        self.captioner_id = ids[0]

    def _new(self) -> Any:
        return self._cls.remote(self.cfg.captioner, self.cfg.captioner_options)

    def submit(self, middles: Any) -> tuple[ray.ObjectRef, int]:
        slot = min(range(len(self.actors)), key=self.pending.__getitem__)
        self.pending[slot] += 1
        return self.actors[slot].caption.remote(middles), slot

    def done(self, slot: int) -> None:
        self.pending[slot] -= 1

    def failed(self, slot: int, error: BaseException) -> None:
        if isinstance(error, ActorDiedError) and self.replaced < self.cfg.max_actor_replacements:
            self.replaced += 1
            print(
                f"[caption-job] captioner actor {slot} died for good ({stages.failure_reason(error)}); replacing it",
                flush=True,
            )
            ray.kill(self.actors[slot], no_restart=True)
            self.actors[slot] = self._new()
            self.pending[slot] = 0


def decode_budget(spec: ShardSpec, options: ExtractOptions, slack_s: float) -> float | None:
    """Seconds a shard's decode task may run before it is cancelled: the per-video budget times the
    videos it decodes, plus slack (None without --item-timeout). The task enforces the per-video
    budget itself; this catches a worker stuck where that cannot reach (native code holding it)."""
    if not options.item_timeout:
        return None
    groups = {r.video_id if options.layout == "full" else (r.video_id, r.clip_id) for r in spec.rows}
    return options.item_timeout * max(1, len(groups)) + slack_s


# A waiting object ref's handler: called with the shard, the ref, its value (or None) and its error.
_Handler = Callable[[_Shard, Any, Any, "Exception | None"], None]


class _Stream:
    """The driver loop of `run_stream`: per shard, decode -> caption -> write, each step a method that
    handles one finished object ref and starts the next step (or salvages, or gives up)."""

    def __init__(
        self,
        out: str,
        videos_root: str,
        options: ExtractOptions,
        subtitles: Mapping[str, str] | None,
        cfg: StreamConfig,
        progress: Progress,
        decode_fn: Callable[..., Any],
    ) -> None:
        self.out, self.videos_root, self.options, self.cfg, self.progress = (
            out,
            videos_root,
            options,
            cfg,
            progress,
        )
        self.decode = ray.remote(decode_fn).options(
            num_cpus=cfg.decode_cpus, num_returns=3, max_retries=cfg.max_retries
        )
        self.decode_one = ray.remote(decode_fn).options(
            num_cpus=cfg.decode_cpus, num_returns=3, max_retries=1
        )
        self.collect = ray.remote(stages.collect_clip_decodes).options(
            num_cpus=0, num_returns=3, max_retries=cfg.max_retries
        )
        self.collect_caps = ray.remote(stages.collect_clip_captions).options(
            num_cpus=0, max_retries=cfg.max_retries
        )
        self.write = ray.remote(stages.write).options(num_cpus=cfg.write_cpus, max_retries=cfg.max_retries)
        self.pool = _CaptionerPool(cfg)
        self.result = StreamResult(self.pool.captioner_id, 0, {})
        self.subs_ref: Any = ray.put(subtitles) if subtitles is not None else None
        self.waiting: dict[ray.ObjectRef, tuple[_Shard, _Handler]] = {}
        self.inflight = 0
        # Decode time budgets. A budget starts when a decode slot is free for its task (queued tasks
        # must not run out of time before they start), so at most `slots` budgets run at once.
        free = ray.cluster_resources().get("CPU", 1.0) - cfg.num_captioners * cfg.captioner_cpus
        self.slots = max(1, math.floor(free / cfg.decode_cpus))
        self.budgets: deque[tuple[Any, float]] = deque()  # (task ref, seconds), in submission order
        self.deadlines: dict[Any, float] = {}  # running budgets: task ref -> time.monotonic() deadline

    # -- the loop
    def run(self, specs: Iterator[ShardSpec]) -> StreamResult:
        exhausted = False
        while True:
            while not exhausted and self.inflight < self.cfg.max_inflight:
                spec = next(specs, None)
                if spec is None:
                    exhausted = True
                    break
                self.inflight += 1
                self._start_decode(_Shard(spec))
            if not self.waiting:
                break
            self._cancel_overdue()
            ready, _ = ray.wait(list(self.waiting), num_returns=1, timeout=self._wait_s())
            for ref in ready:
                sh, handler = self.waiting.pop(ref)
                value: Any = None
                error: Exception | None = None
                try:
                    value = ray.get(ref)
                except Exception as e:  # every failure is handled per shard, by the handler
                    error = e
                handler(sh, ref, value, error)
                self.progress.maybe_print(self.cfg.progress_every_s)
            self.progress.maybe_print(self.cfg.progress_every_s)
        self.progress.maybe_print(0, force=True)
        self.result.actors_replaced = self.pool.replaced
        return self.result

    def _wait_s(self) -> float:
        if not self.deadlines:
            return self.cfg.progress_every_s
        return max(0.05, min(self.cfg.progress_every_s, min(self.deadlines.values()) - time.monotonic()))

    def _budget(self, ref: Any, seconds: float | None) -> None:
        if seconds is not None:
            self.budgets.append((ref, seconds))

    def _cancel_overdue(self) -> None:
        """Cancel (force-kill the worker of) every decode task past its budget: its shard is then
        salvaged clip by clip, and a clip whose own task overruns fails with 'decode: timeout'.
        Then start the budgets of queued tasks as running ones finish."""
        if self.deadlines:
            finished, _ = ray.wait(list(self.deadlines), num_returns=len(self.deadlines), timeout=0)
            for ref in finished:
                del self.deadlines[ref]
        now = time.monotonic()
        for ref, deadline in list(self.deadlines.items()):
            if now > deadline:
                del self.deadlines[ref]
                self.result.decode_cancelled += 1
                ray.cancel(ref, force=True)
        while self.budgets and len(self.deadlines) < self.slots:
            ref, seconds = self.budgets.popleft()
            self.deadlines[ref] = now + seconds

    def _wait_for(self, ref: Any, sh: _Shard, handler: _Handler, budget: float | None = None) -> None:
        self.waiting[ref] = (sh, handler)
        self._budget(ref, budget)

    def _settle(self, sh: _Shard, reason: str) -> None:
        _give_up(sh, reason, self.result)
        self.inflight -= 1

    # -- decode
    def _start_decode(self, sh: _Shard) -> None:
        sh.results, sh.middles, done = self.decode.remote(
            sh.spec, self.videos_root, self.options, self.subs_ref, self.cfg.caption_input_size
        )
        self._wait_for(done, sh, self._decoded, decode_budget(sh.spec, self.options, self.cfg.decode_slack_s))

    def _decoded(self, sh: _Shard, _ref: Any, _value: Any, error: Exception | None) -> None:
        if error is None:
            self._start_caption(sh)
        elif not sh.salvaged:
            self._salvage_decode(sh, error)
        else:
            self._settle(sh, f"decode: {stages.failure_reason(error)}")

    def _salvage_decode(self, sh: _Shard, error: Exception) -> None:
        """The shard's task failed even after Ray's retries (e.g. a decoder crash that kills the worker
        every time, or a hang): decode each clip in its own task so only the culprit fails."""
        sh.salvaged = True
        self.result.decode_salvaged += 1
        print(
            f"[caption-job] shard {sh.spec.index}: decode failed ({stages.failure_reason(error)}); "
            "decoding its clips one by one",
            flush=True,
        )
        clip_refs = []
        for row in sh.spec.rows:
            one = ShardSpec(sh.spec.index, [row])
            refs = tuple(
                self.decode_one.remote(
                    one, self.videos_root, self.options, self.subs_ref, self.cfg.caption_input_size
                )
            )
            self._budget(refs[2], decode_budget(one, self.options, self.cfg.decode_slack_s))
            clip_refs.append(refs)
        sh.results, sh.middles, done = self.collect.remote(sh.spec, clip_refs, self.options.item_timeout)
        self._wait_for(done, sh, self._decoded)

    # -- caption
    def _start_caption(self, sh: _Shard) -> None:
        ref, slot = self.pool.submit(sh.middles)
        self._wait_for(ref, sh, lambda s, r, v, e: self._captioned(s, r, e, slot))

    def _captioned(self, sh: _Shard, ref: Any, error: Exception | None, slot: int) -> None:
        self.pool.done(slot)
        if error is None:
            sh.captions = ref
            self._start_write(sh)
            return
        self.pool.failed(slot, error)
        self.result.caption_salvaged += 1
        print(
            f"[caption-job] shard {sh.spec.index}: captioning failed ({stages.failure_reason(error)}); "
            "captioning its clips one by one",
            flush=True,
        )
        # One call per clip, so a clip whose image crashes the captioner fails alone.
        try:
            middles = ray.get(sh.middles)
        except Exception as e:  # the frames were lost with their node: redo on resubmit
            self._settle(sh, f"caption: {stages.failure_reason(e)}")
            return
        calls = [self.pool.submit({k: img}) for k, img in middles.items()]
        ref = self.collect_caps.remote(list(middles), [c for c, _ in calls])
        slots = [slot for _, slot in calls]
        self._wait_for(ref, sh, lambda s, r, v, e: self._salvage_captioned(s, r, e, slots))

    def _salvage_captioned(self, sh: _Shard, ref: Any, error: Exception | None, slots: list[int]) -> None:
        for slot in slots:
            self.pool.done(slot)
        if error is None:
            sh.captions = ref
            self._start_write(sh)
        else:
            self._settle(sh, f"caption: {stages.failure_reason(error)}")

    # -- write
    def _start_write(self, sh: _Shard) -> None:
        ref = self.write.remote(self.out, sh.spec, sh.results, sh.captions, self.options, sh.started)
        sh.middles = None  # the captions are done: let the object store free the native frames
        self._wait_for(ref, sh, self._written)

    def _written(self, sh: _Shard, _ref: Any, value: Any, error: Exception | None) -> None:
        if error is not None:
            self._settle(sh, f"write: {stages.failure_reason(error)}")
            return
        self.inflight -= 1
        self.result.written += 1
        _count(sh.spec, value, self.progress)


def run_stream(
    out: str,
    specs: Iterator[ShardSpec],
    videos_root: str,
    options: ExtractOptions,
    subtitles: Mapping[str, str] | None,
    cfg: StreamConfig,
    progress: Progress,
    decode_fn: Callable[..., Any] = stages.decode,
) -> StreamResult:
    """Push every shard of `specs` through decode -> caption -> write; returns when all are settled.
    `decode_fn` is the decode stage (tests pass a stand-in that hangs)."""
    return _Stream(out, videos_root, options, subtitles, cfg, progress, decode_fn).run(specs)


def _count(spec: ShardSpec, stats: Mapping[str, Any], progress: Progress) -> None:
    progress.done_clips += len(spec.rows)
    progress.done_shards += 1
    progress.failed_clips += int(stats.get("failed", 0))


def _give_up(sh: _Shard, reason: str, result: StreamResult) -> None:
    """A shard that cannot be written stays incomplete: the job reports it and a resubmit retries it."""
    result.unwritten[sh.spec.index] = reason
    print(f"[caption-job] shard {sh.spec.index} NOT written: {reason}", file=sys.stderr, flush=True)
