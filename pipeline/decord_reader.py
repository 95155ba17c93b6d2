"""The decord engine: the fallback for files PyAV cannot open (or the primary with --decoder decord).

decord seeks to container keyframes, takes container timestamps as presentation times and converts
colour with FFmpeg's approximate swscale path, so it is refused (with the reason) where that is known
to give a wrong frame: AVI and other decode-order timestamps, H.264/HEVC keyframes that are not IDR
pictures (open GOP, intra refresh, remuxed sync flags; both checked with PyAV before decord opens the file), and timestamps that are
not finite and non-decreasing. Its colour is ~1 level darker than the PyAV engine's (docs/PIPELINE.md).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.frame_convert import display_size, resize, squash, video_size
from pipeline.frame_select import select_frames
from pipeline.pyav_reader import END_TOLERANCE_S, ClipTask, DecodeError, decode_order_stamps
from pipeline.random_access import is_clean_random_access


def decord_refusal(path: Path) -> str | None:
    """Why decord must not decode this file, or None (also None when PyAV cannot read it: then decord
    is the only engine left and its own checks apply)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if not c.streams.video:
                return None
            if c.format.name == "avi":
                return "AVI timestamps are decode order (packed B-frames); decord would pick wrong frames"
            s = c.streams.video[0]
            codec, extra = s.codec_context.name, s.codec_context.extradata
            reorders = bool(s.codec_context.has_b_frames)
            packets: list[av.Packet] = []
            for p in c.demux(s):
                if not p.size or p.pts is None:
                    continue
                packets.append(p)
                if (
                    p.is_keyframe
                    and len(packets) > 1
                    and not is_clean_random_access(codec, extra, bytes(p), open_gop=False)
                ):
                    return "keyframes that are not IDR (open GOP, intra refresh or bad sync flags); decord picks wrong frames there"
            if decode_order_stamps(packets, reorders):
                return "timestamps are decode order; decord would pick wrong frames"
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return None
    return None


def _seconds(values: np.ndarray) -> list[Fraction]:
    # decord reports seconds as doubles: round to microseconds, like the spans.
    return [Fraction(round(float(s) * 1e6), 10**6) for s in values]


def decode_with_decord(
    path: Path, tasks: list[ClipTask], frames: int, frame_size: int, video_fps: float | None, video_short: int
) -> tuple[float | None, tuple[int, int] | None]:
    """Fill every task; returns (fps, display size). Raises DecodeError ("open: ..." when unreadable)."""
    import decord  # optional engine: imported only when used

    refusal = decord_refusal(path)
    if refusal is not None:
        raise DecodeError(f"decode: decord refused: {refusal}")
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises its own DECORDError and RuntimeError
        raise DecodeError(f"open: decord: {e}") from e
    n = len(vr)
    if n == 0:
        raise DecodeError("open: decord: no frames")
    stamps = vr.get_frame_timestamp(np.arange(n))
    if not np.all(np.isfinite(stamps)) or np.any(np.diff(stamps[:, 0]) < 0) or stamps[0, 0] < -1:
        raise DecodeError("decode: decord refused: its timestamps are not finite and increasing")
    times_all, ends_all = _seconds(stamps[:, 0]), _seconds(stamps[:, 1])
    video_end = max(ends_all)
    fps = float(vr.get_avg_fps()) or None
    display: tuple[int, int] | None = None
    for c in tasks:
        if c.start is None or c.end is None:
            idx = list(range(n))
            start, end, mid_target = times_all[0], ends_all[-1], None
        else:
            if c.start >= video_end or c.end > video_end + END_TOLERANCE_S:
                c.error = f"decode: span [{float(c.start):.3f}, {float(c.end):.3f}) is past the end of the video ({float(video_end):.3f}s)"
                continue
            idx = [i for i in range(n) if c.start <= times_all[i] < c.end]
            start, end, mid_target = c.start, c.end, (c.start + c.end) / 2
        if not idx:
            c.error = "decode: no frame has its presentation time in the span"
            continue
        # decord's frame index is presentation order, so positions serve as frame keys.
        c.sel = select_frames(idx, [times_all[i] for i in idx], mid_target, frames, video_fps, start, end)
        want = sorted(c.sel.wanted())
        try:
            batch = vr.get_batch(want).asnumpy()
        except Exception as e:
            c.error = f"decode: decord: {e}"
            continue
        got = dict(zip(want, batch))
        c.native[c.sel.middle] = got[c.sel.middle]
        h, w = got[c.sel.middle].shape[:2]
        display = display_size(w, h, None, 0)
        for i in c.sel.small():
            c.small[i] = squash(got[i], frame_size)
        for i in c.sel.video:
            c.video[i] = resize(got[i], *video_size(*display, video_short))
    return (fps if fps and math.isfinite(fps) else None), display
