"""Writing shard files (CONTRACTS §3; the format itself is `pipeline.shard_format`): Parquet rows,
WebDataset tar, stats json written last, atomically.

A shard is complete exactly when `shards/NNNNN.stats.json` exists. The Parquet and tar files are
written under temporary names and renamed into place before the stats file is renamed into place,
so a killed run never leaves a shard that looks complete; leftover temporary files (names starting
with "." and containing ".tmp-") are ignored by readers and removed by `cleanup_temp`.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from pipeline.atomic import temp_path, write_text_atomic
from pipeline.decode import ClipResult
from pipeline.plan import ExtractOptions, Plan, ShardSpec
from pipeline.shard_format import (
    CAPTIONS_SCHEMA,
    SHARD_SCHEMA,
    SHARDS_DIR,
    add_member,
    iter_samples,
    member_name,
    open_tar_writer,
    read_shard,
    sample_members,
    shard_is_complete,
    shard_paths,
)


@dataclass
class CaptionRecord:
    """The caption of one clip's middle frame; `error` ("caption: <reason>") fails the clip."""

    caption: str | None
    captioner: str | None
    caption_ms: float | None = None
    error: str | None = None


def cleanup_temp(out: Path) -> int:
    """Remove temporary files left by killed runs; returns how many were removed.

    Call only when no other writer uses `out` (the CLI holds a lock on OUT while it runs).
    """
    d = Path(out) / SHARDS_DIR
    n = 0
    if d.is_dir():
        for p in d.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name:
                p.unlink(missing_ok=True)
                n += 1
    return n


def _jpeg(a: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _members(res: ClipResult, key: str, caption: str | None, quality: int) -> list[tuple[str, bytes]]:
    assert res.middle_small is not None
    row = res.row
    meta = {
        "clip_id": row.clip_id,
        "video_id": row.video_id,
        "span": [row.span_start, row.span_end],
        "middle_time": res.middle_time,
        "frame_times": res.frame_times,
        "fps": res.fps,
        "width": res.width,
        "height": res.height,
        "display_width": res.display_width,
        "display_height": res.display_height,
        "time_source": res.time_source,
        "index": row.index,
        "decoder": res.decoder,
    }
    return sample_members(
        key,
        middle=_jpeg(res.middle_small, quality),
        frames=[_jpeg(f, quality) for f in res.frames],
        subtitle=res.subtitle,
        caption=caption,
        meta=json.dumps(meta).encode("utf-8"),
        video=res.video_bytes,
    )


def _record(res: ClipResult, shard: int, cap: CaptionRecord | None) -> dict[str, Any]:
    row = res.row
    status, error = res.status, res.error
    if status == "ok" and cap is not None and cap.error is not None:
        status, error = "failed", cap.error
    return {
        "key": row.key,
        "clip_id": row.clip_id,
        "video_id": row.video_id,
        "shard": shard,
        "span_start": row.span_start,
        "span_end": row.span_end,
        "middle_time": res.middle_time,
        "subtitle": res.subtitle,
        "caption": cap.caption if cap is not None and status == "ok" else None,
        "captioner": cap.captioner if cap is not None else None,
        "status": status,
        "error": error,
        "decode_ms": res.decode_ms,
        "caption_ms": cap.caption_ms if cap is not None else None,
    }


def _tmp(path: Path, token: str) -> Path:
    return temp_path(path, token)


def _commit(
    out: Path,
    spec: ShardSpec,
    entries: Iterable[tuple[dict[str, Any], list[tuple[str, bytes]]]],
    started: float | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Write the entries (parquet record, tar members) of a shard and mark it complete, atomically."""
    paths = shard_paths(out, spec.index)
    paths["stats"].parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = {k: _tmp(p, token) for k, p in paths.items()}
    records: list[dict[str, Any]] = []
    samples = 0
    try:
        with open_tar_writer(tmp["tar"]) as tar:
            for rec, members in entries:
                records.append(rec)
                for name, data in members:
                    add_member(tar, name, data)
                samples += bool(members)
        wanted = {r.index for r in spec.rows}
        got = Counter(rec["_index"] for rec in records)
        if set(got) != wanted or any(v != 1 for v in got.values()):
            raise RuntimeError(f"shard {spec.index}: results do not match its {len(wanted)} rows one to one")
        records.sort(key=lambda r: r.pop("_index"))
        table = pa.Table.from_pylist(records, schema=SHARD_SCHEMA)
        pq.write_table(table, tmp["parquet"])
        status = Counter(r["status"] for r in records)
        stages = Counter((r["error"] or "").split(":", 1)[0] for r in records if r["status"] != "ok")
        stats = {
            "shard": spec.index,
            "clips": len(records),
            "ok": status.get("ok", 0),
            "failed": status.get("failed", 0),
            "failed_by_stage": dict(stages),
            "samples": samples,
            "first_index": min(wanted),
            "last_index": max(wanted),
            "decode_ms_sum": float(sum(r["decode_ms"] or 0.0 for r in records)),
            "wall_s": (time.time() - started) if started is not None else None,
            "parquet_bytes": tmp["parquet"].stat().st_size,
            "tar_bytes": tmp["tar"].stat().st_size,
            "written": time.time(),
            **extra,
        }
        tmp["stats"].write_text(json.dumps(stats, indent=1))
        # Order matters: the shard stops looking complete before its data files change.
        paths["stats"].unlink(missing_ok=True)
        os.replace(tmp["parquet"], paths["parquet"])
        os.replace(tmp["tar"], paths["tar"])
        os.replace(tmp["stats"], paths["stats"])
        return stats
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)


def _new_entries(
    results: Iterable[ClipResult], shard: int, captions: Mapping[str, CaptionRecord] | None, quality: int
) -> Iterator[tuple[dict[str, Any], list[tuple[str, bytes]]]]:
    for res in results:
        cap = captions.get(res.row.clip_id) if captions is not None and res.row.clip_id else None
        rec = _record(res, shard, cap)
        rec["_index"] = res.row.index
        members = _members(res, res.row.key, rec["caption"], quality) if rec["status"] == "ok" else []
        yield rec, members


def write_shard(
    out: Path,
    spec: ShardSpec,
    results: Iterable[ClipResult],
    captions: Mapping[str, CaptionRecord] | None,
    options: ExtractOptions,
    *,
    started: float | None = None,
) -> dict[str, Any]:
    """Write shard `spec` from one result per row (an iterable, consumed streaming); returns its stats.

    `captions` maps clip_id -> CaptionRecord (None: not captioned; caption columns stay null).
    """
    entries = _new_entries(results, spec.index, captions, options.jpeg_quality)
    return _commit(Path(out), spec, entries, started, {"retried": 0})


def failed_indices(out: Path, spec: ShardSpec, include_metadata: bool = False) -> set[int]:
    """Global indices of the failed rows of a complete shard (metadata failures only if asked: they
    are deterministic, so retrying them cannot help)."""
    table = read_shard(out, spec.index)
    status = table.column("status").to_pylist()
    errors = table.column("error").to_pylist()
    rows = spec.rows
    if len(rows) != len(status):
        raise RuntimeError(f"shard {spec.index} has {len(status)} rows, the plan says {len(rows)}")
    return {
        r.index
        for r, s, e in zip(rows, status, errors)
        if s != "ok" and (include_metadata or not (e or "").startswith("metadata:"))
    }


def rewrite_shard_with_retries(
    out: Path,
    spec: ShardSpec,
    results: Iterable[ClipResult],
    captions: Mapping[str, CaptionRecord] | None,
    options: ExtractOptions,
    *,
    started: float | None = None,
) -> dict[str, Any]:
    """Replace the rows of retried clips (those in `results`) in a complete shard, atomically."""
    out = Path(out)
    old = read_shard(out, spec.index).to_pylist()
    new = list(_new_entries(results, spec.index, captions, options.jpeg_quality))
    retried = {rec["_index"] for rec, _ in new}
    by_key = {
        key: [(member_name(key, ext), data) for ext, data in raw.items()]
        for key, raw in iter_samples(shard_paths(out, spec.index)["tar"])
    }

    if len(old) != len(spec.rows):
        raise RuntimeError(f"shard {spec.index} has {len(old)} rows, the plan says {len(spec.rows)}")

    def entries() -> Iterator[tuple[dict[str, Any], list[tuple[str, bytes]]]]:
        for row, rec in zip(spec.rows, old):
            if row.index not in retried:
                rec = dict(rec)
                rec["_index"] = row.index
                yield rec, (by_key.get(rec["key"], []) if rec["status"] == "ok" else [])
        yield from new

    return _commit(out, spec, entries(), started, {"retried": len(retried)})


def _error_reason(error: str) -> str:
    # Strip the "(file:line)" source so that identical reasons group together.
    return error.rsplit(" (", 1)[0] if error.endswith(")") and " (" in error else error


def finalize(out: Path, plan: Plan, extra_summary: dict[str, Any]) -> None:
    """Write summary.json and, when every shard is complete, captions.parquet (streamed per shard)."""
    out = Path(out)
    missing = [i for i in range(plan.num_shards) if not shard_is_complete(out, i)]
    status: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    captioners: Counter[str] = Counter()
    complete = not missing
    writer = None
    tmp = out / f".captions.parquet.tmp-{os.getpid()}"
    try:
        if complete:
            writer = pq.ParquetWriter(tmp, CAPTIONS_SCHEMA)
        for i in range(plan.num_shards):
            if i in missing:
                continue
            t = read_shard(out, i)
            status.update(t.column("status").to_pylist())
            for e in t.column("error").to_pylist():
                if e:
                    stages[e.split(":", 1)[0]] += 1
                    reasons[_error_reason(e)] += 1
            captioners.update(c for c in t.column("captioner").to_pylist() if c)
            if writer is not None:
                mask = pc.is_valid(t.column("caption"))
                writer.write_table(t.filter(mask).select(["key", "clip_id", "caption", "captioner"]))
        if writer is not None:
            writer.close()
            writer = None
            os.replace(tmp, out / "captions.parquet")
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    summary = {
        "complete": complete,
        "total_clips": plan.total_clips,
        "num_shards": plan.num_shards,
        "missing_shards": missing[:100],
        "num_missing_shards": len(missing),
        "counts": dict(status),
        "failed_by_stage": dict(stages),
        "top_errors": reasons.most_common(20),
        "captioner": sorted(captioners)[0] if len(captioners) == 1 else (sorted(captioners) or None),
        **extra_summary,
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
