"""The Ray side of the caption job: decode tasks, the captioner actor, and shard writer tasks.

Each stage wraps a Ray-free function of `pipeline` or `captioner`; the scheduler (`jobs/shard_stream.py`)
chains them per shard. What travels between stages is chosen so that large arrays go through the object
store once: a decode task returns two objects, the clip results *without* their native-resolution
middle frames (the writer stores the squashed copy, `middle_small`), and the native middle frames alone,
keyed by clip id. The captioner receives only those; the writer only the results and the captions.

The driver registers this module for pickling by value, so workers never need `jobs/` on their path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import ray

import captioner
from captioner.images import squash
from pipeline.decode import ClipResult
from pipeline.extract import decode_shard
from pipeline.plan import ExtractOptions, ShardSpec
from pipeline.shards import CaptionRecord, write_shard

Middles = dict[str, np.ndarray]


def split_middles(results: list[ClipResult], caption_size: int = 0) -> tuple[list[ClipResult], Middles]:
    """Move each ok clip's native middle frame out of its result, into a clip id -> frame dict.

    With `caption_size` > 0 the frame is squashed to caption_size x caption_size here with
    `captioner.images.squash`, the first step of every captioner that states that input size
    (`captioner.preflight`), so it gets bit-identical pixels while the object store and the network
    carry ~4x less than a 720p frame."""
    middles: Middles = {}
    for r in results:
        if r.status == "ok" and r.middle is not None:
            middles[r.row.clip_id] = squash(r.middle, caption_size) if caption_size > 0 else r.middle
        r.middle = None
    return results, middles


def decode(
    spec: ShardSpec,
    videos_root: str,
    options: ExtractOptions,
    subtitles: Mapping[str, str] | None,
    caption_size: int = 0,
) -> tuple[list[ClipResult], Middles, int]:
    """CPU stage: decode every clip of a shard (bad clips come back as failed results, not errors).

    Three objects: the results, the middle frames, and their count, small enough for the driver to
    fetch (it learns the stage is done, or failed, without pulling any frame to the head node)."""
    results, middles = split_middles(decode_shard(spec, Path(videos_root), options, subtitles), caption_size)
    return results, middles, len(middles)


def collect_clip_decodes(
    spec: ShardSpec,
    clip_refs: list[tuple[ray.ObjectRef, ray.ObjectRef, ray.ObjectRef]],
    item_timeout: float = 0.0,
) -> tuple[list[ClipResult], Middles, int]:
    """Salvage stage: a shard whose decode task kept failing is re-decoded one clip per task; this
    gathers those tasks' results, turning each clip whose own task also failed into a failed result
    (a task the driver cancelled for running past its budget: "decode: timeout after N s")."""
    results: list[ClipResult] = []
    middles: Middles = {}
    for row, (res_ref, mid_ref, _) in zip(spec.rows, clip_refs):
        try:
            res, mid = ray.get([res_ref, mid_ref])
            results.extend(res)
            middles.update(mid)
        except ray.exceptions.TaskCancelledError:
            results.append(ClipResult.failed(row, f"decode: timeout after {item_timeout:g} s"))
        except Exception as e:  # the clip's own task crashed or raised: record it, never retry forever
            results.append(ClipResult.failed(row, f"decode: {failure_reason(e)}"))
    return results, middles, len(middles)


def write(
    out: str,
    spec: ShardSpec,
    results: list[ClipResult],
    captions: Mapping[str, CaptionRecord],
    options: ExtractOptions,
    started: float,
) -> dict[str, Any]:
    """CPU stage: write the shard atomically (Parquet, tar, stats.json last); returns its stats."""
    return write_shard(Path(out), spec, results, captions, options, started=started)


def failure_reason(e: BaseException) -> str:
    """A one-line reason for a recorded failure (Ray wraps remote errors in long multi-line text)."""
    cause = getattr(e, "cause", None)
    base = cause if isinstance(cause, BaseException) else e
    text = f"{type(base).__name__}: {base}".strip().splitlines()
    return text[0][:300] if text else type(base).__name__


class CaptionerWorker:
    """Holds one captioner (loaded once per actor) and captions the middle frames of a shard."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.captioner = captioner.load(name, **options)

    def captioner_id(self) -> str:
        return self.captioner.id

    def pid(self) -> int:
        return os.getpid()

    def caption(self, middles: Mapping[str, np.ndarray]) -> dict[str, CaptionRecord]:
        """Caption a shard's middle frames (clip id -> frame) in one call (the captioner batches internally). When the batch raises,
        each image is retried alone so one bad image fails only its own clip."""
        keys = list(middles)
        if not keys:
            return {}
        cid = self.captioner.id
        t0 = time.perf_counter()
        try:
            texts = self.captioner.caption([middles[k] for k in keys])
            if len(texts) != len(keys):
                raise RuntimeError(f"captioner returned {len(texts)} captions for {len(keys)} images")
        except Exception:
            return {k: self._caption_one(k, middles[k]) for k in keys}
        ms = (time.perf_counter() - t0) * 1000.0 / len(keys)
        return {k: CaptionRecord(caption=t, captioner=cid, caption_ms=ms) for k, t in zip(keys, texts)}

    def _caption_one(self, clip_id: str, image: np.ndarray) -> CaptionRecord:
        t0 = time.perf_counter()
        try:
            (text,) = self.captioner.caption([image])
        except Exception as e:
            return CaptionRecord(
                caption=None,
                captioner=self.captioner.id,
                caption_ms=None,
                error=f"caption: {failure_reason(e)}",
            )
        return CaptionRecord(
            caption=text, captioner=self.captioner.id, caption_ms=(time.perf_counter() - t0) * 1000.0
        )


def collect_clip_captions(keys: list[str], call_refs: list[ray.ObjectRef]) -> dict[str, CaptionRecord]:
    """Salvage stage: gathers one-clip captioner calls; a clip whose call failed gets a failed record."""
    captions: dict[str, CaptionRecord] = {}
    for key, ref in zip(keys, call_refs):
        try:
            captions.update(ray.get(ref))
        except Exception as e:  # the call crashed its actor even after retries: record, do not retry
            captions.update(failed_captions([key], failure_reason(e)))
    return captions


def failed_captions(keys: list[str], reason: str) -> dict[str, CaptionRecord]:
    return {
        k: CaptionRecord(caption=None, captioner=None, caption_ms=None, error=f"caption: {reason}")
        for k in keys
    }
