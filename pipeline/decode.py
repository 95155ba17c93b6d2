"""Exact frame extraction for clips of one video (CONTRACTS §2, frame-selection rules in docs/PIPELINE.md).

`decode_video_clips` opens a video once and returns one `ClipResult` per requested clip. The PyAV
engine (the default, see docs/PIPELINE.md for the benchmark behind the choice) works like this:

1. Packets are demuxed (not decoded) from the keyframe at or before a clip's start through the
   first packet whose decode timestamp reaches the span end. Their presentation timestamps give the
   clip's exact frame list (VFR-safe), hence the middle frame, the T sampled frames and, with
   `store_video`, the frames shown at 3 fps.
2. Packets are fed to a single-threaded decoder with `skip_frame = NONREF` except for the packets of
   wanted frames (`DEFAULT`), so non-reference frames nobody needs are never reconstructed; when no
   output is pending and a keyframe lies before the next wanted frame, decoding jumps to it.
3. Clips of the same video are processed in start order on the same demuxer/decoder, so contiguous
   clips never seek or re-decode; a far-away clip (> `SEEK_GAP_S` after the buffered data) seeks.

decord is the fallback for files PyAV cannot open (and can be chosen as the primary decoder).
Every problem becomes a failed `ClipResult` with a "<stage>: <reason>" error; nothing raises.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from pipeline.metadata import ClipRow

SEEK_GAP_S = Fraction(10)  # clips further than this beyond the buffered packets seek instead of demuxing on
END_TOLERANCE_S = Fraction(1, 2)  # a span may end this much after the last frame ends (rounded spans)
MAX_SEEK_RETRIES = 4


@dataclass
class ClipResult:
    """Everything extracted for one clip (free of Ray; the Ray job reuses it)."""

    row: ClipRow
    status: str  # "ok" | "failed"
    error: str | None = None  # "<stage>: <reason>"
    middle: np.ndarray | None = None  # H x W x 3 uint8 RGB at native resolution, display orientation
    middle_small: np.ndarray | None = None  # the middle frame squashed to frame_size
    frames: list[np.ndarray] = field(default_factory=list)  # T frames squashed to frame_size
    frame_times: list[float] = field(default_factory=list)
    middle_time: float | None = None
    fps: float | None = None
    width: int | None = None  # native display size (after rotation)
    height: int | None = None
    decode_ms: float | None = None
    subtitle: str | None = None
    video_bytes: bytes | None = None  # K.mp4 with store_video
    decoder: str | None = None

    @classmethod
    def failed(cls, row: ClipRow, error: str, **kw) -> ClipResult:
        return cls(row=row, status="failed", error=error, **kw)


@dataclass
class FrameSpec:
    """What to extract per clip."""

    frames: int = 12
    frame_size: int = 224
    store_video: bool = False
    video_fps: float = 3.0
    video_short_side: int = 240
    skip_nonref: bool = True  # benchmarks turn it off to measure what skipping saves


class DecodeError(Exception):
    """A per-video problem; the message is "<stage>: <reason>"."""


# ---------------------------------------------------------------------------------------------------
# Frame selection (pure functions over the sorted presentation times of a clip's frames)


def sampled_positions(n: int, t: int) -> list[int]:
    """floor(linspace(0, n-1, T)) as CLIP-ViP samples (repeats positions when n < T)."""
    if t <= 0 or n <= 0:
        return []
    return [int(x) for x in np.floor(np.linspace(0, n - 1, t))]


def nearest_position(times: Sequence[Fraction], target: Fraction) -> int:
    """Position of the time nearest to target; ties go to the earlier frame."""
    return min(range(len(times)), key=lambda i: (abs(times[i] - target), times[i]))


def shown_positions(times: Sequence[Fraction], start: Fraction, end: Fraction, fps: float) -> list[int]:
    """For t = start + k/fps < end: position of the frame on screen at t (the last with time <= t)."""
    out = []
    step = Fraction(fps).limit_denominator(1001) ** -1
    t = start
    j = 0
    while t < end:
        while j + 1 < len(times) and times[j + 1] <= t:
            j += 1
        out.append(j)
        t += step
    return out or [0]


@dataclass
class _Selection:
    frame_pts: list[int]  # the clip's frames (pts, presentation order)
    middle: int  # pts
    sampled: list[int]
    video: list[int]
    times: dict[int, float]  # pts -> seconds

    def wanted(self) -> set[int]:
        return {self.middle, *self.sampled, *self.video}


def _select(
    frame_pts: list[int],
    times: list[Fraction],
    mid_target: Fraction | None,
    spec: FrameSpec,
    start: Fraction,
    end: Fraction,
) -> _Selection:
    n = len(frame_pts)
    mid = nearest_position(times, mid_target) if mid_target is not None else n // 2
    sampled = [frame_pts[i] for i in sampled_positions(n, spec.frames)]
    video = (
        [frame_pts[i] for i in shown_positions(times, start, end, spec.video_fps)] if spec.store_video else []
    )
    return _Selection(
        frame_pts, frame_pts[mid], sampled, video, {p: float(t) for p, t in zip(frame_pts, times)}
    )


# ---------------------------------------------------------------------------------------------------
# Frame conversion


def _rot90(a: np.ndarray, rotation: int) -> np.ndarray:
    # `rotation` is the display matrix angle, counter-clockwise degrees (as FFmpeg's autorotate reads it).
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(a, k)) if k else a


def _video_size(width: int, height: int, short: int, rotation: int) -> tuple[int, int]:
    """Pre-rotation (w, h) so that the displayed frame has its short side == short, both even."""
    swap = round(rotation / 90) % 2 == 1
    dw, dh = (height, width) if swap else (width, height)
    scale = short / min(dw, dh)
    w, h = max(2, round(dw * scale / 2) * 2), max(2, round(dh * scale / 2) * 2)
    return (h, w) if swap else (w, h)


def encode_clip_video(frames: list[np.ndarray], fps: float) -> bytes:
    """Encode display-orientation RGB frames as H.264 mp4 at `fps` (the --store-video K.mp4)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {"crf": "23", "preset": "veryfast"}
        for i, a in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(a, format="rgb24")
            vf.pts = i
            for p in stream.encode(vf):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return buf.getvalue()


def squash(a: np.ndarray, size: int) -> np.ndarray:
    """Resize RGB to size x size ignoring aspect (CLIP-ViP's squash), bicubic."""
    if a.shape[0] == size and a.shape[1] == size:
        return a
    return np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------------------------------------------
# PyAV engine


@dataclass
class _ClipState:
    pos: int  # position in the caller's list
    row: ClipRow
    start: Fraction | None  # None: whole file (clips layout)
    end: Fraction | None
    sel: _Selection | None = None
    error: str | None = None
    native: dict[int, np.ndarray] = field(default_factory=dict)
    small: dict[int, np.ndarray] = field(default_factory=dict)
    video: dict[int, np.ndarray] = field(default_factory=dict)
    t0: float = 0.0
    ms: float = 0.0

    def missing(self) -> set[int]:
        assert self.sel is not None
        need = {self.sel.middle} - set(self.native)
        need |= {self.sel.middle, *self.sel.sampled} - set(self.small)
        need |= set(self.sel.video) - set(self.video)
        return need


def _pts(p: av.Packet) -> int:
    assert p.pts is not None  # packets without pts never enter the buffer
    return p.pts


class _PyAVVideo:
    def __init__(self, path: Path, spec: FrameSpec) -> None:
        self.path = path
        self.spec = spec
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise DecodeError(f"open: {type(e).__name__}: {e}") from e
        if not self.container.streams.video:
            self.container.close()
            raise DecodeError("open: no video stream (audio-only or data file)")
        self.stream = self.container.streams.video[0]
        self.cc = self.stream.codec_context
        self.cc.thread_type = "NONE"  # one core per worker process; the pool gives the parallelism
        self.cc.thread_count = 1
        self.tb = Fraction(self.stream.time_base or Fraction(1, 90000))
        self.start_pts = self.stream.start_time or 0
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.rotation = 0
        self.decode_errors: list[str] = []
        self._reset_buffer()
        self._demux = self.container.demux(self.stream)
        self.at_file_start = True
        self.video_end: Fraction | None = None  # known once EOF is seen
        declared = self.stream.duration
        self.declared_end = declared * self.tb if declared else None

    # -- buffer of demuxed packets, in decode order; indices are absolute (self.off = trimmed count)
    def _reset_buffer(self) -> None:
        self.pk: list[av.Packet] = []
        self.off = 0
        self.index_of: dict[int, int] = {}
        self.discard: set[int] = set()
        self.keys: list[int] = []  # absolute indices of keyframes
        self.fed = 0
        self.pending: set[int] = set()  # wanted pts fed with DEFAULT and not yet output
        self.eof = False
        self.last_dts_time: Fraction | None = None
        self.max_time: Fraction | None = None

    def time(self, pts: int | None) -> Fraction:
        assert pts is not None  # packets without pts never enter the buffer
        return (pts - self.start_pts) * self.tb

    def _end(self) -> int:
        return self.off + len(self.pk)

    def _read_packet(self) -> bool:
        """Demux one packet into the buffer; False at end of file (or on a read error)."""
        if self.eof:
            return False
        while True:
            try:
                p = next(self._demux)
            except StopIteration:
                p = None
            except (av.FFmpegError, OSError) as e:
                self.decode_errors.append(f"demux: {e}")
                p = None
            if p is None or p.size == 0:
                self.eof = True
                if self.max_time is not None:
                    self.video_end = max(self.video_end or Fraction(0), self.max_time)
                return False
            if p.pts is None:
                raise DecodeError("demux: packets without timestamps")
            if not self.pk and not p.is_keyframe:
                continue  # decoding starts at a keyframe
            idx = self._end()
            self.pk.append(p)
            self.index_of[p.pts] = idx
            if p.is_keyframe:
                self.keys.append(idx)
            if p.is_discard:
                self.discard.add(p.pts)
            dts = p.dts if p.dts is not None else p.pts
            self.last_dts_time = self.time(dts)
            dur = p.duration or 0
            t_end = self.time(p.pts + dur) if not p.is_discard else None
            if t_end is not None and (self.max_time is None or t_end > self.max_time):
                self.max_time = t_end
            return True

    def _flush_decoder(self) -> None:
        if self.cc.is_open:
            self.cc.flush_buffers()
        self.pending.clear()

    def seek(self, t: Fraction) -> None:
        """Position the buffer at the keyframe at or before presentation time t."""
        target = self.start_pts + math.floor(t / self.tb)
        for _ in range(MAX_SEEK_RETRIES):
            self._flush_decoder()
            self._reset_buffer()
            try:
                self.container.seek(target, backward=True, any_frame=False, stream=self.stream)
            except (av.FFmpegError, OSError) as e:
                raise DecodeError(f"seek: {e}") from e
            self._demux = self.container.demux(self.stream)
            self.at_file_start = False
            if not self._read_packet():
                return
            first = self.pk[0]
            # The mp4 index seeks by decode time: step back while the keyframe shows after t.
            if self.time(first.pts) <= t or target <= self.start_pts:
                return
            target = min(_pts(first), first.dts if first.dts is not None else _pts(first)) - 1
        return

    def covers(self, start: Fraction) -> bool:
        if not self.pk:
            return False
        first_t = Fraction(-1) if self.at_file_start and self.off == 0 else self.time(self.pk[0].pts)
        if first_t > start:
            return False
        return self.eof or self.last_dts_time is None or start <= self.last_dts_time + SEEK_GAP_S

    def ensure_through(self, end: Fraction | None) -> None:
        while not self.eof and (end is None or self.last_dts_time is None or self.last_dts_time < end):
            self._read_packet()

    def frames_in(self, start: Fraction | None, end: Fraction | None) -> list[int]:
        pts = [
            _pts(p)
            for p in self.pk
            if p.pts not in self.discard
            and (start is None or self.time(p.pts) >= start)
            and (end is None or self.time(p.pts) < end)
        ]
        return sorted(set(pts))

    # -- per clip
    def determine(self, c: _ClipState, allow_seek: bool = True) -> None:
        """Find the clip's frames and wanted pts (sets c.sel or c.error).

        Without allow_seek the buffer is known to cover the clip's start (a packet showing at or
        after it is about to be fed), so only demuxing on is allowed.
        """
        if c.start is None:
            if self.off != 0 or not self.at_file_start:
                self.seek(Fraction(-1))
            self.ensure_through(None)
            frame_pts = self.frames_in(None, None)
            if not frame_pts:
                c.error = "decode: no decodable frame in the file"
                return
            times = [self.time(p) for p in frame_pts]
            c.sel = _select(frame_pts, times, None, self.spec, times[0], times[-1] + Fraction(1, 10**6))
            return
        assert c.end is not None
        if allow_seek and not self.covers(c.start):
            self.seek(c.start)
        self.ensure_through(c.end)
        if self.eof and self.video_end is not None:
            if c.start >= self.video_end:
                c.error = f"decode: span starts at {float(c.start):.3f}s, after the video ends ({float(self.video_end):.3f}s)"
                return
            if c.end > self.video_end + END_TOLERANCE_S:
                c.error = (
                    f"decode: span ends at {float(c.end):.3f}s, past the end of the video "
                    f"({float(self.video_end):.3f}s{self._truncation_note()})"
                )
                return
        if self.eof and self.video_end is None:
            if self.declared_end is not None and c.start >= self.declared_end:
                c.error = f"decode: span starts at {float(c.start):.3f}s, after the video ends ({float(self.declared_end):.3f}s)"
            elif self.declared_end is not None:
                c.error = (
                    f"decode: no video packet could be read at {float(c.start):.3f}s although the file declares "
                    f"{float(self.declared_end):.3f}s: truncated?" + self._errors_suffix()
                )
            else:
                c.error = "decode: no video packet could be read" + self._errors_suffix()
            return
        frame_pts = self.frames_in(c.start, c.end)
        if not frame_pts:
            c.error = (
                f"decode: no frame has its presentation time in [{float(c.start):.3f}, {float(c.end):.3f})"
            )
            return
        times = [self.time(p) for p in frame_pts]
        c.sel = _select(frame_pts, times, (c.start + c.end) / 2, self.spec, c.start, c.end)

    def _truncation_note(self) -> str:
        assert self.video_end is not None
        if self.declared_end is not None and self.declared_end > self.video_end + END_TOLERANCE_S:
            return f"; the file declares {float(self.declared_end):.3f}s: truncated?"
        return ""

    def _errors_suffix(self) -> str:
        return (
            f" ({len(self.decode_errors)} errors, first: {self.decode_errors[0]})"
            if self.decode_errors
            else ""
        )

    def _capture(self, frame: av.VideoFrame, active: list[_ClipState]) -> None:
        pts = frame.pts
        if pts is None:
            return
        self.pending.discard(pts)
        if frame.is_corrupt:  # e.g. missing references: never hand out a wrong picture as the frame
            self.decode_errors.append(f"corrupt frame at pts {pts}")
            return
        rotation = int(frame.rotation or 0)
        self.rotation = rotation
        cache: dict[str, np.ndarray] = {}
        for c in active:
            sel = c.sel
            if sel is None:
                continue
            if pts == sel.middle and pts not in c.native:
                if "native" not in cache:
                    cache["native"] = _rot90(frame.to_ndarray(format="rgb24"), rotation)
                c.native[pts] = cache["native"]
            if (pts == sel.middle or pts in sel.sampled) and pts not in c.small:
                if "small" not in cache:
                    s = self.spec.frame_size
                    small = frame.reformat(width=s, height=s, format="rgb24", interpolation="BICUBIC")
                    cache["small"] = _rot90(small.to_ndarray(), rotation)
                c.small[pts] = cache["small"]
            if pts in sel.video and pts not in c.video:
                if "video" not in cache:
                    w, h = _video_size(frame.width, frame.height, self.spec.video_short_side, rotation)
                    vf = frame.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC")
                    cache["video"] = _rot90(vf.to_ndarray(), rotation)
                c.video[pts] = cache["video"]

    def _feed(self, packet: av.Packet | None, active: list[_ClipState], wanted: set[int]) -> None:
        if packet is not None:
            want = packet.pts in wanted
            self.cc.skip_frame = "DEFAULT" if want or not self.spec.skip_nonref else "NONREF"
            if want:
                self.pending.add(_pts(packet))
        try:
            frames = self.cc.decode(packet)
        except (av.FFmpegError, ValueError) as e:
            self.decode_errors.append(str(e))
            frames = []
        for f in frames:
            self._capture(f, active)

    def run(self, clips: list[_ClipState]) -> None:
        """Decode all clips (sorted by start); fills sel/frames or error of each."""
        nxt = 0  # next clip to determine
        for ci, c in enumerate(clips):
            c.t0 = time.perf_counter()
            if c.sel is None and c.error is None:
                self._determine_guarded(c)
                nxt = max(nxt, ci + 1)
            if c.error is not None or c.sel is None:
                c.ms += (time.perf_counter() - c.t0) * 1000
                continue
            redecoded = False
            while True:
                missing = c.missing()
                if not missing:
                    break
                active = [x for x in clips[ci:nxt] if x.sel is not None and x.error is None]
                wanted: set[int] = set().union(*(x.missing() for x in active))
                miss_idx = [self.index_of[p] for p in missing if p in self.index_of]
                if len(miss_idx) < len(missing):
                    c.error = "decode: wanted frame left the packet buffer (internal)"
                    break
                lost = [i for i in miss_idx if i < self.fed and self.pk[i - self.off].pts not in self.pending]
                if lost:
                    if redecoded:
                        c.error = (
                            f"decode: {len(missing)} wanted frame(s) were not produced by the decoder"
                            + self._errors_suffix()
                        )
                        break
                    redecoded = True
                    self._flush_decoder()
                    self.fed = max(k for k in self.keys if k <= min(lost) and k >= self.off)
                    continue
                if ci == len(clips) - 1 and missing <= self.pending:
                    # Last clip of the file, every wanted packet fed: drain the decoder instead of
                    # decoding reference frames that only push the delayed (B-frame) outputs out.
                    self._feed(None, active, wanted)
                    self._flush_decoder()
                    continue  # frames still missing now count as lost: one re-decode, then failure
                first = self.pk[min(miss_idx) - self.off]
                if not self.pending:
                    # Nothing is waiting in the decoder: jump to the last keyframe before the next wanted
                    # frame (of any clip that may own frames before it; closed GOPs make that safe).
                    n0 = nxt
                    nxt = self._determine_until(clips, nxt, self.time(first.pts))
                    if nxt != n0:
                        continue
                    first_wanted = min(self.index_of[p] for p in wanted if p in self.index_of)
                    k = max((k for k in self.keys if self.fed < k <= first_wanted), default=None)
                    if k is not None:
                        self._flush_decoder()
                        self.fed = k
                if self.fed >= self._end() and not self._read_packet():
                    self._feed(None, active, wanted)  # drain at end of file
                    self._flush_decoder()
                    self.fed = self._end()
                    if c.missing():
                        if redecoded:
                            c.error = (
                                f"decode: {len(c.missing())} wanted frame(s) were not produced by the decoder"
                                + self._errors_suffix()
                            )
                            break
                        redecoded = True
                        lost_idx = [self.index_of[p] for p in c.missing()]
                        self.fed = max(k for k in self.keys if k <= min(lost_idx) and k >= self.off)
                    continue
                p = self.pk[self.fed - self.off]
                # Clips that may own this packet's frame must know their wanted frames before it is fed.
                n0 = nxt
                nxt = self._determine_until(clips, nxt, self.time(p.pts))
                if nxt != n0:
                    continue
                self._feed(p, active, wanted)
                self.fed += 1
            c.ms += (time.perf_counter() - c.t0) * 1000
            if ci + 1 < len(clips) and clips[ci + 1].start is not None:
                self._trim(clips[ci + 1].start)  # type: ignore[arg-type]

    def _determine_guarded(self, c: _ClipState, allow_seek: bool = True) -> None:
        try:
            self.determine(c, allow_seek)
        except DecodeError as e:
            c.error = str(e)

    def _determine_until(self, clips: list[_ClipState], nxt: int, t: Fraction) -> int:
        """Determine the clips (from nxt on) that start at or before t; returns the new nxt."""
        while nxt < len(clips):
            s = clips[nxt].start
            if s is None or s > t:
                break
            self._determine_guarded(clips[nxt], allow_seek=False)
            nxt += 1
        return nxt

    def _trim(self, next_start: Fraction) -> None:
        """Drop packets before the last fed keyframe that shows at or before the next clip's start."""
        cands = [
            k
            for k in self.keys
            if k >= self.off and k <= self.fed and self.time(self.pk[k - self.off].pts) <= next_start
        ]
        if not cands or self.pending:
            return
        k = max(cands)
        drop = k - self.off
        if drop <= 0:
            return
        for p in self.pk[:drop]:
            self.index_of.pop(_pts(p), None)
            self.discard.discard(p.pts)
        self.pk = self.pk[drop:]
        self.keys = [x for x in self.keys if x >= k]
        self.off = k

    def close(self) -> None:
        self.container.close()


# ---------------------------------------------------------------------------------------------------
# decord engine (fallback)


def _decord_clips(path: Path, states: list[_ClipState], spec: FrameSpec) -> float | None:
    import decord

    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises its own DECORDError and RuntimeError
        raise DecodeError(f"open: decord: {e}") from e
    n = len(vr)
    if n == 0:
        raise DecodeError("open: decord: no frames")
    stamps = vr.get_frame_timestamp(np.arange(n))
    # decord reports seconds as doubles: round to microseconds, like the spans.
    times_all = [Fraction(round(float(s) * 1e6), 10**6) for s in stamps[:, 0]]
    ends_all = [Fraction(round(float(s) * 1e6), 10**6) for s in stamps[:, 1]]
    video_end = max(ends_all)
    fps = float(vr.get_avg_fps()) or None
    for c in states:
        t0 = time.perf_counter()
        if c.start is None:
            idx = list(range(n))
            start, end, mid_target = times_all[0], ends_all[-1], None
        else:
            assert c.end is not None
            if c.start >= video_end or c.end > video_end + END_TOLERANCE_S:
                c.error = f"decode: span [{float(c.start):.3f}, {float(c.end):.3f}) is past the end of the video ({float(video_end):.3f}s)"
                continue
            idx = [i for i in range(n) if c.start <= times_all[i] < c.end]
            start, end, mid_target = c.start, c.end, (c.start + c.end) / 2
        if not idx:
            c.error = "decode: no frame has its presentation time in the span"
            continue
        times = [times_all[i] for i in idx]
        # decord's frame index is presentation order, so use positions as pseudo-pts.
        c.sel = _select(idx, times, mid_target, spec, start, end)
        want = sorted(c.sel.wanted())
        try:
            batch = vr.get_batch(want).asnumpy()
        except Exception as e:
            c.error = f"decode: decord: {e}"
            continue
        got = dict(zip(want, batch))
        c.native[c.sel.middle] = got[c.sel.middle]
        for i in {c.sel.middle, *c.sel.sampled}:
            c.small[i] = squash(got[i], spec.frame_size)
        for i in c.sel.video:
            h, w = got[i].shape[:2]
            vw, vh = _video_size(w, h, spec.video_short_side, 0)
            c.video[i] = np.asarray(Image.fromarray(got[i]).resize((vw, vh), Image.Resampling.BICUBIC))
        c.ms += (time.perf_counter() - t0) * 1000
    return fps


# ---------------------------------------------------------------------------------------------------


def _result(c: _ClipState, spec: FrameSpec, fps: float | None, decoder: str) -> ClipResult:
    if c.error is not None or c.sel is None:
        return ClipResult.failed(
            c.row, c.error or "decode: unknown failure", decode_ms=c.ms, fps=fps, decoder=decoder
        )
    sel = c.sel
    middle = c.native[sel.middle]
    res = ClipResult(
        row=c.row,
        status="ok",
        middle=middle,
        middle_small=c.small[sel.middle],
        frames=[c.small[p] for p in sel.sampled],
        frame_times=[sel.times[p] for p in sel.sampled],
        middle_time=sel.times[sel.middle],
        fps=fps,
        width=int(middle.shape[1]),
        height=int(middle.shape[0]),
        decode_ms=c.ms,
        decoder=decoder,
    )
    if spec.store_video:
        t0 = time.perf_counter()
        try:
            res.video_bytes = encode_clip_video([c.video[p] for p in sel.video], spec.video_fps)
        except (av.FFmpegError, ValueError) as e:
            return ClipResult.failed(c.row, f"encode: {e}", decode_ms=c.ms, fps=fps, decoder=decoder)
        res.decode_ms = c.ms + (time.perf_counter() - t0) * 1000
    return res


def _states(rows: Sequence[ClipRow], whole_file: bool) -> list[_ClipState]:
    out = []
    for i, r in enumerate(rows):
        if whole_file:
            out.append(_ClipState(i, r, None, None))
        else:
            s, e = r.span_fractions
            out.append(_ClipState(i, r, s, e))
    return out


def decode_video_clips(
    path: Path, rows: Sequence[ClipRow], spec: FrameSpec, whole_file: bool = False, decoder: str = "pyav"
) -> list[ClipResult]:
    """Extract the clips `rows` (spans of `path`, or `path` as a whole with whole_file) in their order.

    The primary `decoder` ("pyav" or "decord") is tried first; the other one only when the primary
    cannot open the file.
    """
    order = [decoder, "decord" if decoder == "pyav" else "pyav"]
    open_errors = []
    t_open = time.perf_counter()
    for name in order:
        states = _states(rows, whole_file)
        by_start = sorted(states, key=lambda c: (c.start or 0, c.end or 0, c.pos))
        try:
            if name == "pyav":
                video = _PyAVVideo(path, spec)
                try:
                    video.run(by_start)
                finally:
                    video.close()
                fps = video.fps
            else:
                fps = _decord_clips(path, by_start, spec)
        except DecodeError as e:
            msg = str(e)
            if not msg.startswith("open:"):
                return [ClipResult.failed(c.row, msg, decoder=name) for c in states]
            open_errors.append(f"{name}: {msg[len('open: ') :]}")
            continue
        open_ms = (time.perf_counter() - t_open) * 1000 - sum(c.ms for c in states)
        for c in states:  # the file open is shared by its clips
            c.ms += max(0.0, open_ms) / max(1, len(states))
        return [_result(c, spec, fps, name) for c in states]
    reason = "open: " + "; ".join(open_errors)
    return [ClipResult.failed(r, reason) for r in rows]
