"""Work plan of an extraction run: options, inputs and the fixed clip -> shard assignment.

Shard `i` holds the clips with global metadata index in [i * shard_size, (i + 1) * shard_size), so
every rerun and every machine agrees on the assignment. `OUT/plan.json` records inputs and options;
a rerun whose inputs or options differ is refused unless `overwrite=True`. Inputs are compared by
content, not location: metadata and subtitle files by size and head/tail hash, and the videos root not
at all (it is too large to fingerprint; the drivers check that it holds the named videos before
planning). So a corpus that moved or is mounted elsewhere resumes, and plan.json then records where
the inputs are now.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text_atomic
from pipeline.metadata import ClipRow, expand_metadata, iter_clips

PLAN_FORMAT = 1
LAYOUTS = ("full", "clips")
DECODERS = ("pyav", "decord")


def toolkit_version() -> str:
    try:
        from importlib.metadata import version

        return version("clipvip")
    except Exception:  # not installed (e.g. run from a bare checkout)
        return "0+unknown"


@dataclass
class ExtractOptions:
    """Every option of an extraction run (the one place for their defaults)."""

    layout: str = "full"
    frames: int = 12  # T sampled frames per clip (0: middle frame only)
    frame_size: int = 224  # stored frames are squashed to frame_size x frame_size
    shard_size: int = 1000
    store_video: bool = False  # also store K.mp4: the clip at video_fps, short side video_short_side
    jpeg_quality: int = 90
    decoder: str = "pyav"  # primary decoder; the other one is the fallback for files it cannot open
    video_fps: float = 3.0
    video_short_side: int = 240
    workers: int = 1  # runtime only: not recorded as an output-shaping option
    item_timeout: float = 600.0  # runtime only: seconds one video may decode per shard (0: no limit)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. captioner settings of the Ray job

    RUNTIME_FIELDS = ("workers", "item_timeout")

    @classmethod
    def from_args(cls, args: Any, **overrides: Any) -> ExtractOptions:
        """Options from a parsed CLI namespace: every field the namespace has (same names), then `overrides`."""
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return cls(**{**given, **overrides})

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The inputs, outputs and extraction options `pipeline extract` and the Ray job share (one place
        for their flags, help and defaults; `from_args` reads them back)."""
        d = ExtractOptions()
        io = parser.add_argument_group("inputs and outputs (CONTRACTS §1, §3)")
        io.add_argument("--metadata", nargs="+", required=True, help="HD-VILA jsonl part files or globs")
        io.add_argument("--videos", type=Path, required=True, help="video root (see --layout)")
        io.add_argument("--layout", choices=LAYOUTS, default=d.layout, help="full videos or cut clips")
        io.add_argument("--out", type=Path, required=True, help="output directory (CONTRACTS §3)")
        io.add_argument(
            "--subtitles",
            type=Path,
            default=None,
            help="jsonl or parquet of {clip_id, text}, or a folder of <video_id>.vtt/.srt files (cut by clip span)",
        )
        io.add_argument("--overwrite", action="store_true", help="discard previous outputs and start over")
        ex = parser.add_argument_group("extraction")
        ex.add_argument(
            "--frames", type=int, default=d.frames, help="sampled frames per clip (0: middle only)"
        )
        ex.add_argument("--frame-size", type=int, default=d.frame_size, help="stored frame side (squashed)")
        ex.add_argument("--shard-size", type=int, default=d.shard_size, help="clips per shard")
        ex.add_argument("--decoder", choices=DECODERS, default=d.decoder, help="primary decoder")
        ex.add_argument(
            "--item-timeout",
            type=float,
            default=d.item_timeout,
            help="seconds one video may take to decode; its clips then fail with 'decode: timeout' (0: no limit)",
        )
        ex.add_argument("--store-video", action="store_true", help="also store K.mp4 (3 fps, short side 240)")

    def validate(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.frames < 0 or self.frame_size < 8 or self.shard_size < 1 or self.workers < 1:
            raise ValueError("need frames >= 0, frame_size >= 8, shard_size >= 1, workers >= 1")
        if not self.item_timeout >= 0:
            raise ValueError(f"item_timeout must be >= 0 seconds (0: no limit), got {self.item_timeout}")
        if not 1 <= self.jpeg_quality <= 100 or self.video_fps <= 0 or self.video_short_side < 16:
            raise ValueError("bad jpeg_quality, video_fps or video_short_side")

    def recorded(self) -> dict[str, Any]:
        """The options that shape outputs (compared on rerun)."""
        d = dataclasses.asdict(self)
        for k in self.RUNTIME_FIELDS:
            d.pop(k)
        return d


@dataclass
class ShardSpec:
    index: int
    rows: list[ClipRow]


@dataclass
class Plan:
    out: Path
    metadata: list[str]  # patterns as given
    files: list[str]  # resolved metadata files, in order
    videos_root: str
    subtitles: str | None
    options: ExtractOptions
    total_clips: int
    num_shards: int
    version: str
    created: float

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "version": self.version,
            "created": self.created,
            "inputs": _inputs(self.metadata, self.files, self.videos_root, self.subtitles),
            "options": self.options.recorded(),
            "shard_size": self.options.shard_size,
            "total_clips": self.total_clips,
            "num_shards": self.num_shards,
        }


class PlanMismatchError(RuntimeError):
    """The output directory holds a plan made with other inputs or options."""


def _fingerprint(path: Path) -> dict[str, Any]:
    # Size plus hashes of the first and last MiB: cheap on multi-GB metadata, catches real edits.
    if path.is_dir():  # a subtitles folder: its files' names and fingerprints
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {
            "path": str(path.resolve()),
            "files": {str(p.relative_to(path)): _fingerprint(p)["sha256_head_tail"] for p in files},
        }
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if st.st_size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read())
    return {"path": str(path.resolve()), "size": st.st_size, "sha256_head_tail": h.hexdigest()}


def _inputs(metadata: list[str], files: list[str], videos: str, subtitles: str | None) -> dict[str, Any]:
    return {
        "metadata": list(metadata),
        "metadata_files": [_fingerprint(Path(f)) for f in files],
        "videos": str(Path(videos).resolve()),
        "subtitles": _fingerprint(Path(subtitles)) if subtitles else None,
    }


def _content(inputs: dict[str, Any]) -> dict[str, Any]:
    """What a rerun must keep: the metadata and subtitle contents (patterns and paths may change)."""

    def strip(fp: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if fp is None else {k: v for k, v in fp.items() if k != "path"}

    return {
        "metadata_files": [strip(f) for f in inputs["metadata_files"]],
        "subtitles": strip(inputs.get("subtitles")),
    }


def _describe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    diffs = []
    for section in ("inputs", "options"):
        a, b = old.get(section, {}), new.get(section, {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                diffs.append(f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}")
    return "; ".join(diffs)


def load_or_create_plan(
    out: Path,
    metadata: Sequence[str | Path],
    videos_root: str | Path,
    options: ExtractOptions,
    overwrite: bool = False,
    subtitles: str | Path | None = None,
) -> Plan:
    """Create OUT/plan.json (counting the clips by one streaming pass) or check the existing one.

    With `overwrite`, previous outputs (shards, captions, summary) are removed first.
    """
    options.validate()
    out = Path(out)
    patterns = [str(m) for m in metadata]
    files = [str(p) for p in expand_metadata(patterns)]
    subs = str(subtitles) if subtitles else None
    plan_path = out / "plan.json"
    if plan_path.exists() and not overwrite:
        old = json.loads(plan_path.read_text())
        new = {"inputs": _inputs(patterns, files, str(videos_root), subs), "options": options.recorded()}
        old_cmp = {"inputs": _content(old["inputs"]), "options": old["options"]}
        new_cmp = {"inputs": _content(new["inputs"]), "options": new["options"]}
        if old_cmp != new_cmp:
            raise PlanMismatchError(
                f"{plan_path} was made with other inputs or options ({_describe_diff(old_cmp, new_cmp)}); "
                "rerun with the same ones, or pass --overwrite to start over"
            )
        if old["inputs"] != new["inputs"]:  # the same content elsewhere: record where it is now
            write_text_atomic(plan_path, json.dumps({**old, "inputs": new["inputs"]}, indent=2))
        return Plan(
            out=out,
            metadata=list(old["inputs"]["metadata"]),
            files=files,
            videos_root=str(videos_root),
            subtitles=subs,
            options=options,
            total_clips=int(old["total_clips"]),
            num_shards=int(old["num_shards"]),
            version=str(old["version"]),
            created=float(old["created"]),
        )
    if overwrite:
        for name in ("shards", "captions.parquet", "summary.json", "plan.json"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
    total = sum(1 for _ in iter_clips(files))
    plan = Plan(
        out=out,
        metadata=patterns,
        files=files,
        videos_root=str(videos_root),
        subtitles=subs,
        options=options,
        total_clips=total,
        num_shards=(total + options.shard_size - 1) // options.shard_size,
        version=toolkit_version(),
        created=time.time(),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    write_text_atomic(plan_path, json.dumps(plan.to_json(), indent=2))
    return plan


def iter_shards(plan: Plan, only: set[int] | None = None) -> Iterator[ShardSpec]:
    """Stream the shards of `plan` in order (all of them, or those in `only`)."""
    size = plan.options.shard_size
    rows: list[ClipRow] = []
    current = 0
    for row in iter_clips(plan.files):
        shard = row.index // size
        if shard != current:
            if rows:
                yield ShardSpec(current, rows)
            rows, current = [], shard
        if only is None or shard in only:
            rows.append(row)
    if rows:
        yield ShardSpec(current, rows)
