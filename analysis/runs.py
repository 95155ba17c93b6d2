"""One captioner's output, as the comparison reads it: an OUT directory of the caption job (or only its
captions.parquet). The files are the pipeline's (CONTRACTS §3); they are read with its schemas and
shard format (`pipeline.shard_format`), never re-parsed here.

Validation happens in `open_run`, before any work: a path that is neither an OUT directory with a
captions.parquet nor a Parquet file with the caption columns is refused with one line.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.shard_format import (
    CAPTIONS_SCHEMA,
    MIDDLE,
    complete_shard_tars,
    member_name,
    read_shard,
    shard_index,
)

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JPEG_MAGIC = b"\xff\xd8\xff"


class RunError(ValueError):
    """A --runs entry that cannot be used (one line for the user)."""


@dataclass
class CaptionRun:
    """Captions of one captioner by clip id, and what the job recorded about how they were made."""

    label: str
    path: Path  # the OUT directory, or the captions.parquet given directly
    captions_file: Path
    captions: dict[str, str]  # clip_id -> caption ("" when the captioner wrote an empty one)
    keys: dict[str, str]  # clip_id -> sample key (K of K.mid.jpg)
    captioners: list[str]  # model ids in the file's captioner column
    summary: dict[str, Any] | None = None  # OUT/summary.json
    out_dir: Path | None = None  # None when only a captions.parquet was given
    caption_ms: list[float] = field(default_factory=list)  # per image, from the shards
    subtitles: dict[str, str] = field(default_factory=dict)  # clip_id -> subtitle, from the shards

    def speed(self) -> dict[str, Any]:
        """Measured throughput: captioner images/s (shards' caption_ms: time inside the batched caption
        call per image) and the whole job's clips/s (summary.json), with the machine they ran on."""
        s = self.summary or {}
        ms = float(np.mean(self.caption_ms)) if self.caption_ms else None
        cluster = s.get("cluster")
        parts = [s.get("machine") or "CPU model not recorded in summary.json"]
        if cluster:  # the Ray job: its summary names the driver; the rates are the cluster's
            parts.append(f"Ray cluster resources {cluster}")
        machine = "; ".join(parts) if self.summary else "unknown (no summary.json)"
        return {
            "caption_images_per_s": (1000.0 / ms) if ms else None,
            "caption_ms_per_image": ms,
            "images_timed": len(self.caption_ms),
            "job_clips_per_s": s.get("clips_per_s"),
            "stream_clips_per_s": s.get("stream_clips_per_s"),
            "runner": s.get("runner"),
            "machine": machine,
        }


def parse_run_arg(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not path:
        raise RunError(f"--runs entry {text!r}: expected LABEL=PATH (an OUT dir or a captions.parquet)")
    if not LABEL_RE.match(label):
        raise RunError(f"--runs label {label!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return label, Path(path).expanduser()


def _read_captions(path: Path) -> pa.Table:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise RunError(f"{path}: not a Parquet file ({e}); expected the job's captions.parquet") from None
    missing = [c for c in ("clip_id", "caption") if c not in schema.names]
    if missing:
        raise RunError(
            f"{path}: Parquet without column(s) {missing}; expected captions.parquet columns "
            f"{CAPTIONS_SCHEMA.names} (CONTRACTS §3)"
        )
    cols = [c for c in CAPTIONS_SCHEMA.names if c in schema.names]
    return pq.read_table(path, columns=cols)


def open_run(label: str, path: Path) -> CaptionRun:
    """Read one run's captions (and, for an OUT dir, its summary, per-image timings and subtitles)."""
    if path.is_dir():
        captions_file = path / "captions.parquet"
        if not captions_file.is_file():
            raise RunError(
                f"--runs {label}: {path} has no captions.parquet (the job writes it when every shard "
                "is complete)"
            )
        out_dir: Path | None = path
    elif path.is_file():
        captions_file, out_dir = path, None
    else:
        raise RunError(f"--runs {label}: {path} does not exist")
    table = _read_captions(captions_file).to_pylist()
    captions: dict[str, str] = {}
    keys: dict[str, str] = {}
    for row in table:
        cid, cap = row.get("clip_id"), row.get("caption")
        if isinstance(cid, str) and isinstance(cap, str):
            captions[cid] = cap.strip()
            keys[cid] = row.get("key") or ""
    if not captions:
        raise RunError(f"--runs {label}: {captions_file} holds no captions")
    run = CaptionRun(
        label=label,
        path=path,
        captions_file=captions_file,
        captions=captions,
        keys=keys,
        captioners=sorted({r["captioner"] for r in table if r.get("captioner")}),
        out_dir=out_dir,
    )
    if out_dir is not None:
        summary = out_dir / "summary.json"
        if summary.is_file():
            run.summary = json.loads(summary.read_text(encoding="utf-8"))
        _read_shard_rows(run)
    return run


def _read_shard_rows(run: CaptionRun) -> None:
    assert run.out_dir is not None
    for tar in complete_shard_tars(run.out_dir):
        t = read_shard(run.out_dir, shard_index(tar)).to_pylist()
        for row in t:
            if row["status"] != "ok":
                continue
            if row["caption_ms"] is not None:
                run.caption_ms.append(float(row["caption_ms"]))
            if row["subtitle"] is not None:
                run.subtitles[row["clip_id"]] = row["subtitle"]


def middle_frames(out_dir: Path, keys: set[str]) -> dict[str, bytes]:
    """`K.mid.jpg` of the wanted sample keys from the complete shards of an OUT dir (JPEG bytes only:
    a member that is not a JPEG is left out rather than shown as something else)."""
    found: dict[str, bytes] = {}
    wanted = {member_name(k, MIDDLE): k for k in keys}
    for tar_path in complete_shard_tars(out_dir):
        with tarfile.open(tar_path, "r:") as tar:
            for m in tar:
                key = wanted.get(m.name)
                if key is None or not m.isfile():
                    continue
                f = tar.extractfile(m)
                data = f.read() if f is not None else b""
                if data.startswith(JPEG_MAGIC):
                    found[key] = data
        if len(found) == len(keys):
            break
    return found
