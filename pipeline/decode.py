"""Exact frame extraction for the clips of one video (CONTRACTS §2; docs/PIPELINE.md).

`decode_video_clips` opens a video once and returns one `ClipResult` per requested clip. The work is
split by concern:

- `pipeline.frame_select`: which frames a clip wants (middle, sampled, shown at 3 fps);
- `pipeline.pyav_reader`: the default engine, which decodes only what the wanted frames need and
  stores a frame only when its decode can be trusted (retrying from earlier keyframes, then from the
  start of the file);
- `pipeline.random_access`: whether a keyframe is a clean random-access point;
- `pipeline.frame_convert`: exact colour at full resolution, orientation, display aspect, resizes;
- `pipeline.decord_reader`: the fallback engine, refused where it is known to be wrong.

Every problem becomes a failed `ClipResult` with a "<stage>: <reason>" error (normalised, so identical
causes group in summary.json's top_errors); nothing raises. A video that exceeds its time budget
(`item_timeout`) fails its clips with "decode: timeout after N s".
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.decord_reader import decode_with_decord
from pipeline.frame_convert import encode_clip_video
from pipeline.metadata import ClipRow
from pipeline.pyav_reader import ClipTask, DecodeError, PyAVReader


@dataclass
class ClipResult:
    """Everything extracted for one clip (free of Ray; the Ray job reuses it)."""

    row: ClipRow
    status: str  # "ok" | "failed"
    error: str | None = None  # "<stage>: <reason>"
    middle: np.ndarray | None = None  # H x W x 3 uint8 RGB at the stored resolution, display orientation
    middle_small: np.ndarray | None = None  # the middle frame squashed to frame_size
    frames: list[np.ndarray] = field(default_factory=list)  # T frames squashed to frame_size
    frame_times: list[float] = field(default_factory=list)
    middle_time: float | None = None
    fps: float | None = None
    width: int | None = None  # stored size (coded pixels, after rotation)
    height: int | None = None
    display_width: int | None = None  # on screen: sample aspect ratio and rotation applied
    display_height: int | None = None
    time_source: str | None = None  # "pts" or "output_order" (docs/PIPELINE.md)
    decode_ms: float | None = None
    subtitle: str | None = None
    video_bytes: bytes | None = None  # K.mp4 with store_video
    decoder: str | None = None

    @classmethod
    def failed(cls, row: ClipRow, error: str, **kw) -> ClipResult:
        return cls(row=row, status="failed", error=normalise_error(error), **kw)


@dataclass
class FrameSpec:
    """What to extract per clip."""

    frames: int = 12
    frame_size: int = 224
    store_video: bool = False
    video_fps: float = 3.0
    video_short_side: int = 240
    skip_nonref: bool = True  # benchmarks turn it off to measure what skipping saves
    checks: bool = (
        True  # the real-world checks (docs/PIPELINE.md, "Invariant"); benchmarks measure their cost
    )
    item_timeout: float | None = None  # seconds per video (ExtractOptions holds the CLI default)


_TIMESTAMP = re.compile(r"\[\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\]\s*")  # decord's log prefix
_ADDRESS = re.compile(r"\s*@\s*0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")


def normalise_error(message: str) -> str:
    """Drop wall-clock times ("[22:59:11] ") and memory addresses ("@ 0x55d...") so that identical
    causes read identically; keeps the "<stage>: " prefix."""
    return " ".join(_ADDRESS.sub("", _TIMESTAMP.sub("", message)).split())


@dataclass
class _VideoInfo:
    fps: float | None = None
    display: tuple[int, int] | None = None
    time_source: str = "pts"


def _run_pyav(path: Path, tasks: list[ClipTask], spec: FrameSpec, deadline: float) -> _VideoInfo:
    video_fps = spec.video_fps if spec.store_video else None
    reader = PyAVReader(path, spec.frames, spec.frame_size, video_fps, spec.video_short_side)
    reader.skip_nonref, reader.checks = spec.skip_nonref, spec.checks
    reader.deadline, reader.timeout_s = deadline, spec.item_timeout
    try:
        reader.run(tasks)
    finally:
        reader.close()
    return _VideoInfo(reader.fps, reader.display, reader.time_source)


def _run_decord(path: Path, tasks: list[ClipTask], spec: FrameSpec) -> _VideoInfo:
    video_fps = spec.video_fps if spec.store_video else None
    fps, display = decode_with_decord(
        path, tasks, spec.frames, spec.frame_size, video_fps, spec.video_short_side
    )
    return _VideoInfo(fps, display, "pts")


def _tasks(rows: Sequence[ClipRow], whole_file: bool) -> list[ClipTask]:
    if whole_file:
        return [ClipTask(i, None, None) for i in range(len(rows))]
    return [ClipTask(i, *r.span_fractions) for i, r in enumerate(rows)]


def _result(row: ClipRow, t: ClipTask, spec: FrameSpec, info: _VideoInfo, decoder: str) -> ClipResult:
    common: dict[str, Any] = {"decode_ms": t.ms, "fps": info.fps, "decoder": decoder}
    if t.error is not None or t.sel is None or t.missing():
        return ClipResult.failed(row, t.error or "decode: unknown failure", **common)
    sel = t.sel
    middle = t.native[sel.middle]
    disp = info.display or (int(middle.shape[1]), int(middle.shape[0]))
    res = ClipResult(
        row=row,
        status="ok",
        middle=middle,
        middle_small=t.small[sel.middle],
        frames=[t.small[k] for k in sel.sampled],
        frame_times=[sel.times[k] for k in sel.sampled],
        middle_time=sel.times[sel.middle],
        width=int(middle.shape[1]),
        height=int(middle.shape[0]),
        display_width=disp[0],
        display_height=disp[1],
        time_source=info.time_source,
        **common,
    )
    if spec.store_video:
        t0 = time.perf_counter()
        try:
            res.video_bytes = encode_clip_video([t.video[k] for k in sel.video], spec.video_fps)
        except (av.FFmpegError, ValueError) as e:
            return ClipResult.failed(row, f"encode: {e}", **common)
        res.decode_ms = t.ms + (time.perf_counter() - t0) * 1000
    return res


def _decode_engines(
    path: Path, rows: Sequence[ClipRow], spec: FrameSpec, whole_file: bool, decoder: str, deadline: float
) -> list[ClipResult]:
    """The primary engine, then the other one only when the primary cannot open the file."""
    order = [decoder, "decord" if decoder == "pyav" else "pyav"]
    open_errors = []
    t_open = time.perf_counter()
    for name in order:
        tasks = _tasks(rows, whole_file)
        by_start = sorted(tasks, key=lambda c: (c.start or 0, c.end or 0, c.pos))
        try:
            info = (
                _run_pyav(path, by_start, spec, deadline)
                if name == "pyav"
                else _run_decord(path, by_start, spec)
            )
        except DecodeError as e:
            msg = str(e)
            if not msg.startswith("open:"):
                return [ClipResult.failed(r, msg, decoder=name) for r in rows]
            open_errors.append(f"{name}: {msg[len('open: ') :]}")
            continue
        open_ms = (time.perf_counter() - t_open) * 1000 - sum(c.ms for c in tasks)
        for c in tasks:  # the file open is shared by its clips
            c.ms += max(0.0, open_ms) / max(1, len(tasks))
        return [_result(rows[c.pos], c, spec, info, name) for c in tasks]
    reason = "open: " + "; ".join(open_errors)
    return [ClipResult.failed(r, reason) for r in rows]


def decode_video_clips(
    path: Path, rows: Sequence[ClipRow], spec: FrameSpec, whole_file: bool = False, decoder: str = "pyav"
) -> list[ClipResult]:
    """Extract the clips `rows` (spans of `path`, or `path` as a whole with whole_file) in their order.

    With `spec.item_timeout` the decode runs in a helper thread: the PyAV engine stops itself at the
    deadline, and a decoder stuck inside native code is abandoned there while its clips fail with
    "decode: timeout after N s", so the caller's shard goes on."""
    if not spec.item_timeout:
        return _decode_engines(path, rows, spec, whole_file, decoder, float("inf"))
    timeout = float(spec.item_timeout)
    deadline = time.monotonic() + timeout
    box: list[list[ClipResult] | BaseException] = []

    def work() -> None:
        try:
            box.append(_decode_engines(path, rows, spec, whole_file, decoder, deadline))
        except BaseException as e:  # handed to the caller's thread below
            box.append(e)

    worker = threading.Thread(target=work, name=f"decode {path.name}", daemon=True)
    worker.start()
    worker.join(timeout + 1.0)  # the engine's own deadline check normally ends it first
    if not box:
        return [ClipResult.failed(r, f"decode: timeout after {timeout:g} s", decoder=decoder) for r in rows]
    out = box[0]
    if isinstance(out, BaseException):
        raise out
    return out
