"""The PyAV engine: exact frames for the clips of one video, never a frame it cannot vouch for.

The steps, each a method below (docs/PIPELINE.md, "How decoding works" and "Invariant"):

1. **Group** the clips (sorted by start) into runs close enough to share one decode (`_groups`).
2. **Window**: demux, without decoding, the packets from a clean random-access keyframe at or before
   the group's start through the group's end (`_window`). Packet pts give each clip's exact frame list,
   so the wanted frames are known before anything is decoded (`_select`).
3. **Decode** the window (`_decode`): non-reference frames nobody wants are skipped, the decoder jumps
   to a later clean keyframe when nothing is pending, and stops once the last wanted frame is out.
   Every run is watched: a decode error, a logged error, a corrupt frame, a missing wanted frame, or a
   wanted frame shown before the keyframe the run started at makes the run untrusted.
4. **Retry** an untrusted run from an earlier clean keyframe, then from the start of the file, which is
   the truth by definition; only then do the clips that still miss frames fail, with the reason.
5. **Output-order time**: when the container's timestamps are decode order (AVI, packed B-frames,
   pts == dts with a reordering codec, or pts going backwards on output), frame times are derived from
   output order and the stream rate, as a full ffmpeg decode presents them (`_run_output_order`).

A clip's outcome depends only on the file and its own span: groups, retries and start points change
how much is decoded, never which frame is stored.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np

from pipeline.frame_convert import display_size, resize, rotate, squash, to_rgb, video_size
from pipeline.frame_select import Selection, select_frames
from pipeline.random_access import is_clean_random_access

SEEK_GAP_S = Fraction(10)  # a clip further than this after its group's end starts a new group (seeks)
MAX_GROUP_S = Fraction(60)  # bounds the packets buffered for one group
END_TOLERANCE_S = Fraction(1, 2)  # a span may end this much after the last frame ends (rounded spans)
MAX_BACK_STEPS = 8  # unclean keyframes stepped over before decoding from the start of the file
# FFmpeg's stream probe decodes the first H.264 pictures (until the reorder delay is known) only to
# describe the stream. With skip_frame it still parses the headers but decodes nothing: ~10 ms less per
# 720p open. Kept only where that is known to describe the stream alike: mp4/mov (timestamps from the
# index, not from decoded frames) whose SPS declares reordering; anything else is probed in full (a NUT
# file lost its start time, an SPS without bitstream restriction its reorder flag; tests cover both).
_PROBE_WITHOUT_DECODE = {"skip_frame": "all"}


class DecodeError(Exception):
    """A per-video problem; the message is "<stage>: <reason>"."""


class DecodeTimeout(DecodeError):
    """The video's time budget (--item-timeout) ran out."""


class _OutputOrderNeeded(Exception):
    """Packet timestamps turned out to be decode order: times must come from output order."""


@dataclass
class ClipTask:
    """One clip's request and what was captured for it (keys: packet pts or output positions)."""

    pos: int  # position in the caller's list
    start: Fraction | None  # None: the whole file (clips layout)
    end: Fraction | None
    sel: Selection | None = None
    error: str | None = None
    native: dict[int, np.ndarray] = field(default_factory=dict)
    small: dict[int, np.ndarray] = field(default_factory=dict)
    video: dict[int, np.ndarray] = field(default_factory=dict)
    ms: float = 0.0

    def missing(self) -> set[int]:
        if self.sel is None or self.error is not None:
            return set()
        need = {self.sel.middle} - set(self.native)
        need |= self.sel.small() - set(self.small)
        need |= set(self.sel.video) - set(self.video)
        return need

    def reset(self) -> None:
        self.sel, self.error = None, None
        self.native, self.small, self.video = {}, {}, {}


@dataclass
class _Window:
    packets: list[av.Packet]  # decode order, from a keyframe
    from_file_start: bool
    eof: bool  # the window reaches the end of the file

    @property
    def key_pts(self) -> int:
        return _pts(self.packets[0])


@dataclass
class _Run:
    """What one decode run saw; `trusted` decides whether its frames may be stored."""

    errors: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.errors.append(message)


def _pts(p: av.Packet | av.VideoFrame) -> int:
    assert p.pts is not None  # packets without pts never enter a window
    return p.pts


class PyAVReader:
    """One open video; `run(tasks)` fills every task's frames or error. Raises DecodeError (open,
    demux, timeout); DecodeError("open: ...") lets the caller fall back to the other decoder."""

    def __init__(
        self, path: Path, frames: int, frame_size: int, video_fps: float | None, video_short: int
    ) -> None:
        self.frames, self.frame_size, self.video_fps, self.video_short = (
            frames,
            frame_size,
            video_fps,
            video_short,
        )
        self.skip_nonref = True  # benchmarks turn it off to measure what skipping saves
        self.checks = True  # keyframe, error-log and intra checks; benchmarks turn them off to cost them
        self.deadline = math.inf  # time.monotonic() value past which the decode gives up
        self.timeout_s: float | None = None
        try:
            self.container = open_video(str(path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise DecodeError(f"open: {type(e).__name__}: {e}") from e
        if not self.container.streams.video:
            self.container.close()
            raise DecodeError("open: no video stream (audio-only or data file)")
        self.stream = self.container.streams.video[0]
        self.cc = self.stream.codec_context
        self.cc.thread_type = "NONE"  # one core per worker process; the pool gives the parallelism
        self.cc.thread_count = 1
        self.codec = self.cc.name
        self.extradata = self.cc.extradata
        self.tb = Fraction(self.stream.time_base or Fraction(1, 90000))
        self.start_pts = self.stream.start_time or 0
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.rate = Fraction(rate) if rate else None
        self.fps = float(rate) if rate else None
        self.sar = Fraction(self.stream.sample_aspect_ratio) if self.stream.sample_aspect_ratio else None
        declared = self.stream.duration
        self.declared_end = declared * self.tb if declared else None
        self.time_source = "output_order" if self.container.format.name == "avi" else "pts"
        self.rotation = 0
        self.stored_size: tuple[int, int] | None = None  # (w, h) after rotation
        self._clean: dict[int, bool] = {}  # keyframe pts -> clean random-access point?
        self.first_key_pts = self._first_keyframe_pts()
        self._last_out: int | None = None  # pts of the last frame out of the decoder in this run
        self._start_key: int | None = None  # pts of the keyframe the decoder started at (not the file start)

    def close(self) -> None:
        self.container.close()

    def _first_keyframe_pts(self) -> int | None:
        try:
            for p in self.container.demux(self.stream):
                if p.size and p.is_keyframe:
                    return p.pts if p.pts is not None else p.dts
        except (av.FFmpegError, OSError):
            return None
        return None

    @property
    def display(self) -> tuple[int, int] | None:
        if self.stored_size is None:
            return None
        w, h = self.stored_size
        swap = round(self.rotation / 90) % 2 == 1
        cw, ch = (h, w) if swap else (w, h)  # coded size
        return display_size(cw, ch, self.sar, self.rotation)

    def time(self, pts: int) -> Fraction:
        return (pts - self.start_pts) * self.tb

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise DecodeTimeout(f"decode: timeout after {self.timeout_s:g} s")

    # -- 1. groups --------------------------------------------------------------------------------

    def run(self, tasks: list[ClipTask]) -> None:
        """Fill every task (sorted by start); switches to output-order time when pts cannot be used."""
        if self.time_source == "pts":
            try:
                for group in self._groups(tasks):
                    t0 = time.perf_counter()
                    self._run_group(group)
                    _share_ms(group, t0)
                return
            except _OutputOrderNeeded:
                self.time_source = "output_order"
                for t in tasks:
                    t.reset()
        t0 = time.perf_counter()
        self._run_output_order(tasks)
        _share_ms(tasks, t0)

    def _groups(self, tasks: list[ClipTask]) -> Iterator[list[ClipTask]]:
        group: list[ClipTask] = []
        g_start = g_end = Fraction(0)
        for t in tasks:
            if t.start is None or t.end is None:
                yield [t]  # whole file
                continue
            if group and (t.start > g_end + SEEK_GAP_S or max(g_end, t.end) - g_start > MAX_GROUP_S):
                yield group
                group = []
            if not group:
                g_start, g_end = t.start, t.end
            group.append(t)
            g_end = max(g_end, t.end)
        if group:
            yield group

    # -- 2-4. window, select, decode, retry ---------------------------------------------------------

    def _run_group(self, group: list[ClipTask]) -> None:
        """Steps 2-4 for one group: window, select, decode, and retry until a run is trusted."""
        whole = group[0].start is None
        lo = None if whole else min(t.start for t in group if t.start is not None)
        hi = None if whole else max(t.end for t in group if t.end is not None)
        tried: set[int] = set()
        reason = ""
        decoded = False
        for attempt in ("keyframe", "earlier keyframe", "start of file"):
            window = self._window_at(None, hi) if lo is None or attempt == "start of file" else None
            if window is None:
                assert lo is not None
                before = lo if not tried else self.time(min(tried)) - self.tb
                window = self._window_at(before, hi)
            if window is None or window.key_pts in tried:
                continue
            tried.add(window.key_pts)
            decoded = True
            if decode_order_stamps(window.packets, bool(self.cc.has_b_frames)):
                raise _OutputOrderNeeded
            for t in group:
                t.reset()
                self._select(t, window)
            run = self._decode(window, group)
            if not any(t.missing() for t in group) and (window.from_file_start or not run.errors):
                return
            reason = _failure_reason(run, window, sum(len(t.missing()) for t in group))
            if window.from_file_start:
                break
        for t in group:
            if not decoded:
                t.error = self._no_packet_reason(t)
            elif t.missing():
                t.error = reason

    def _window_at(self, t: Fraction | None, hi: Fraction | None) -> _Window | None:
        """Packets from the last clean keyframe showing at or before t (None: the file's first
        keyframe) through the first packet whose decode time reaches hi (None: end of file)."""
        target = None if t is None else t
        for _ in range(MAX_BACK_STEPS + 1):
            packets, eof = self._demux_from(target, hi)
            if not packets:
                return None
            k = packets[0]
            at_start = self.first_key_pts is None or _pts(k) <= self.first_key_pts
            if at_start or self._is_clean(k):
                return _Window(packets, at_start, eof)
            target = self.time(_pts(k)) - self.tb  # step back over an unclean keyframe
        packets, eof = self._demux_from(None, hi)
        return _Window(packets, True, eof) if packets else None

    def _is_clean(self, packet: av.Packet) -> bool:
        if not self.checks:
            return True
        pts = _pts(packet)
        if pts not in self._clean:
            self._clean[pts] = is_clean_random_access(self.codec, self.extradata, bytes(packet))
        return self._clean[pts]

    def _demux_from(self, t: Fraction | None, hi: Fraction | None) -> tuple[list[av.Packet], bool]:
        """Seek (t None: the file start) and read packets from the keyframe there; (packets, eof)."""
        if t is None:
            self._rewind()
            return self._read(hi)
        target = self.start_pts + math.floor(t / self.tb)
        for _ in range(4):
            try:
                self.container.seek(max(target, self.start_pts - 1), backward=True, stream=self.stream)
            except (av.FFmpegError, OSError) as e:
                raise DecodeError(f"seek: {e}") from e
            packets, eof = self._read(hi)
            if not packets or self.time(_pts(packets[0])) <= t or target <= self.start_pts:
                return packets, eof
            # The mp4 index seeks by decode time: step back while the keyframe shows after t.
            first = packets[0]
            target = min(_pts(first), first.dts if first.dts is not None else _pts(first)) - 1
        return packets, eof

    def _rewind(self) -> None:
        """Back to the first packet: a seek where the container allows it, else a fresh open."""
        try:
            self.container.seek(self.start_pts - 1, backward=True, stream=self.stream)
            return
        except (av.FFmpegError, OSError):
            pass
        self.container.close()
        self.container = open_video(self.container.name)
        self.stream = self.container.streams.video[0]
        self.cc = self.stream.codec_context
        self.cc.thread_type = "NONE"
        self.cc.thread_count = 1

    def _read(self, hi: Fraction | None) -> tuple[list[av.Packet], bool]:
        packets: list[av.Packet] = []
        for p in self._packets():
            packets.append(p)
            dts = p.dts if p.dts is not None else p.pts
            if hi is not None and dts is not None and self.time(dts) >= hi:
                return packets, False
        return packets, True

    def _packets(self) -> Iterator[av.Packet]:
        """Packets from the demuxer's position on, starting at a keyframe, empty ones dropped (a demux
        error after the first packet ends the stream, as a truncated file does)."""
        n = 0
        try:
            for p in self.container.demux(self.stream):
                self._check_deadline()
                if p.size == 0:
                    continue
                if p.pts is None:
                    if self.time_source == "pts":
                        raise DecodeError("demux: packets without timestamps")
                    p.pts = p.dts if p.dts is not None else n  # output order needs no pts
                if not n and not p.is_keyframe:
                    continue  # decoding starts at a keyframe
                n += 1
                yield p
        except (av.FFmpegError, OSError) as e:
            if not n:
                raise DecodeError(f"demux: {e}") from e

    def _select(self, task: ClipTask, window: _Window) -> None:
        shown = [p for p in window.packets if not p.is_discard]
        if task.start is None or task.end is None:
            keys = sorted({_pts(p) for p in shown})
            if not keys:
                task.error = "decode: no decodable frame in the file"
                return
            times = [self.time(k) for k in keys]
            task.sel = self._selection(keys, times, None, times[0], times[-1] + Fraction(1, 10**6))
            return
        task.error = self._past_end(task, shown) if window.eof else None
        if task.error is not None:
            return
        keys = sorted({_pts(p) for p in shown if task.start <= self.time(_pts(p)) < task.end})
        if not keys:
            span = f"[{float(task.start):.3f}, {float(task.end):.3f})"
            task.error = f"decode: no frame has its presentation time in {span}"
            return
        times = [self.time(k) for k in keys]
        task.sel = self._selection(keys, times, (task.start + task.end) / 2, task.start, task.end)

    def _selection(
        self, keys: list[int], times: list[Fraction], mid: Fraction | None, start: Fraction, end: Fraction
    ) -> Selection:
        return select_frames(keys, times, mid, self.frames, self.video_fps, start, end)

    def _past_end(self, task: ClipTask, shown: list[av.Packet]) -> str | None:
        """The span starts after, or ends past, the last frame of the file (the window reached EOF)."""
        assert task.start is not None and task.end is not None
        video_end = max((self.time(_pts(p) + (p.duration or 0)) for p in shown), default=Fraction(0))
        note = ""
        if self.declared_end is not None and self.declared_end > video_end + END_TOLERANCE_S:
            note = f"; the file declares {float(self.declared_end):.3f}s: truncated?"
        if task.start >= video_end:
            return (
                f"decode: span starts at {float(task.start):.3f}s, after the video ends "
                f"({float(video_end):.3f}s{note})"
            )
        if task.end > video_end + END_TOLERANCE_S:
            return (
                f"decode: span ends at {float(task.end):.3f}s, past the end of the video "
                f"({float(video_end):.3f}s{note})"
            )
        return None

    def _no_packet_reason(self, task: ClipTask) -> str:
        start = float(task.start or 0)
        if self.declared_end is None:
            return "decode: no video packet could be read"
        if task.start is not None and task.start >= self.declared_end:
            return (
                f"decode: span starts at {start:.3f}s, after the video ends ({float(self.declared_end):.3f}s)"
            )
        return (
            f"decode: no video packet could be read at {start:.3f}s although the file declares "
            f"{float(self.declared_end):.3f}s: truncated?"
        )

    def _decode(self, window: _Window, group: list[ClipTask]) -> _Run:
        """Decode the window until every wanted frame of the group is captured (or nothing is left)."""
        run = _Run()
        wanted = set().union(*(t.missing() for t in group))
        if not wanted:
            return run
        if not self.checks:
            self._decode_loop(window, group, run, wanted)
            return run
        level = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)  # decoder errors reach this run's Capture, nothing else
        try:
            with av.logging.Capture() as logs:
                self._decode_loop(window, group, run, wanted)
        finally:
            av.logging.set_level(level)
        run.errors += [_log_text(m) for m in logs if m[0] <= av.logging.ERROR]
        return run

    def _decode_loop(self, window: _Window, group: list[ClipTask], run: _Run, wanted: set[int]) -> None:
        index = {_pts(p): i for i, p in enumerate(window.packets)}
        last = max(index[k] for k in wanted)
        keys = [j for j, p in enumerate(window.packets) if p.is_keyframe]
        pending: set[int] = set()
        i = 0
        self._last_out = None
        self._start_key = None if window.from_file_start else window.key_pts
        self.cc.flush_buffers()
        while wanted and i <= last:
            self._check_deadline()
            if not pending:
                i = self._jump(window, keys, index, wanted, i)
            p = window.packets[i]
            want = _pts(p) in wanted
            self.cc.skip_frame = "DEFAULT" if want or not self.skip_nonref else "NONREF"
            if want:
                pending.add(_pts(p))
            self._feed(p, window, group, run, pending, wanted)
            i += 1
        if pending:  # every wanted packet is fed: drain instead of feeding more references
            self._feed(None, window, group, run, pending, wanted)

    def _jump(self, window: _Window, keys: list[int], index: dict[int, int], wanted: set[int], i: int) -> int:
        """The last clean keyframe after i that lies before, and shows no later than, every wanted
        frame (nothing is pending, so the decoder may be flushed there)."""
        first = min(index[k] for k in wanted)
        lowest = min(wanted)
        for j in reversed(keys[bisect.bisect_right(keys, i) : bisect.bisect_right(keys, first)]):
            p = window.packets[j]
            if _pts(p) <= lowest and self._is_clean(p):
                self.cc.flush_buffers()
                self._last_out = None
                self._start_key = _pts(p)
                return j
        return i

    def _feed(
        self,
        packet: av.Packet | None,
        window: _Window,
        group: list[ClipTask],
        run: _Run,
        pending: set[int],
        wanted: set[int],
    ) -> None:
        try:
            frames = self.cc.decode(packet)
        except (av.FFmpegError, ValueError) as e:
            run.note(f"{type(e).__name__}: {e}")
            return
        for f in frames:
            pts = f.pts
            if pts is None:
                continue
            if self._last_out is not None and pts < self._last_out:
                raise _OutputOrderNeeded
            self._last_out = pts
            pending.discard(pts)
            if f.is_corrupt:
                run.note(f"corrupt frame at {float(self.time(pts)):.3f}s")
                continue
            if self.checks and pts == self._start_key and f.pict_type != av.video.frame.PictureType.I:
                # A sync flag on a predicted picture (remuxed flags, intra refresh): nothing after it
                # is provably complete.
                run.note(f"keyframe at {float(self.time(pts)):.3f}s is not an intra picture")
            if pts < window.key_pts and not window.from_file_start:
                continue  # a leading picture of an open GOP: its references precede the keyframe
            if pts in wanted:
                wanted.discard(pts)
                self._capture(f, pts, group)
        if packet is None:
            self._last_out = None

    def _capture(self, frame: av.VideoFrame, key: int, tasks: list[ClipTask]) -> None:
        """Convert a wanted frame once (full resolution, exact colour, display orientation) and hand
        each clip the forms it wants."""
        self.rotation = int(frame.rotation or 0)
        rgb = rotate(to_rgb(frame), self.rotation)
        self.stored_size = (int(rgb.shape[1]), int(rgb.shape[0]))
        small: np.ndarray | None = None
        shown: np.ndarray | None = None
        for t in tasks:
            sel = t.sel
            if sel is None or t.error is not None:
                continue
            if key == sel.middle:
                t.native[key] = rgb
            if key in sel.small():
                small = squash(rgb, self.frame_size) if small is None else small
                t.small[key] = small
            if key in sel.video:
                if shown is None:
                    disp = self.display
                    assert disp is not None
                    shown = resize(rgb, *video_size(*disp, self.video_short))
                t.video[key] = shown

    # -- 5. output-order time -----------------------------------------------------------------------

    def _run_output_order(self, tasks: list[ClipTask]) -> None:
        """Times = position in output order / stream rate; one full decode from the file start."""
        if not self.rate:
            for t in tasks:
                t.error = "decode: timestamps are in decode order and the stream has no frame rate"
            return
        # Two streaming passes (count, then decode) rather than holding the file's packets: an hour of
        # AVI would not fit in a worker's memory.
        self._rewind()
        count = sum(1 for p in self._packets() if not p.is_discard)
        for _ in range(2):
            for t in tasks:
                t.reset()
                self._select_positions(t, count)
            wanted = set().union(*(t.missing() for t in tasks))
            produced = self._decode_all(tasks, wanted)
            if produced == count:
                break
            count = produced  # the decoder's frame count wins; select again with it
        for t in tasks:
            if t.missing() and t.error is None:
                t.error = f"decode: {len(t.missing())} wanted frame(s) were not produced by a full decode"

    def _select_positions(self, task: ClipTask, count: int) -> None:
        assert self.rate is not None
        if count == 0:
            task.error = "decode: no decodable frame in the file"
            return
        times = [Fraction(i) / self.rate for i in range(count)]
        if task.start is None or task.end is None:
            keys = list(range(count))
            task.sel = self._selection(keys, times, None, times[0], times[-1] + Fraction(1, 10**6))
            return
        keys = [i for i in range(count) if task.start <= times[i] < task.end]
        if not keys:
            end = float(count / self.rate)
            task.error = f"decode: span [{float(task.start):.3f}, {float(task.end):.3f}) is past the end of the video ({end:.3f}s)"
            return
        task.sel = self._selection(
            keys, [times[i] for i in keys], (task.start + task.end) / 2, task.start, task.end
        )

    def _decode_all(self, tasks: list[ClipTask], wanted: set[int]) -> int:
        """Decode every packet of the file in order (nothing skipped: skipping would shift output
        positions)."""
        self._rewind()
        self.cc.flush_buffers()
        self.cc.skip_frame = "DEFAULT"
        n = 0
        for p in itertools.chain(self._packets(), [None]):
            self._check_deadline()
            try:
                frames = self.cc.decode(p)
            except (av.FFmpegError, ValueError):
                continue
            for f in frames:
                if n in wanted and not f.is_corrupt:
                    self._capture(f, n, tasks)
                n += 1
        return n


def open_video(path: str) -> av.container.InputContainer:
    """Open for reading, probing mp4 H.264 from its headers alone where safe (_PROBE_WITHOUT_DECODE)."""
    container = av.open(path, metadata_errors="ignore", options=_PROBE_WITHOUT_DECODE)
    video = container.streams.video
    if not video:
        return container
    cc = video[0].codec_context
    if container.format.name.startswith("mov") and cc.name == "h264" and cc.width and cc.has_b_frames:
        return container
    container.close()
    return av.open(path, metadata_errors="ignore")


def decode_order_stamps(packets: list[av.Packet], reorders: bool) -> bool:
    """pts that merely count decode order although the codec reorders frames (e.g. mpeg4 B-frames
    written with pts = dts): they rise strictly in decode order and mostly equal the dts. A real
    reordering stream shows pts out of decode order, or (mp4, a stretch without B-frames) pts a
    constant delay after dts."""
    if not reorders or len(packets) < 8:
        return False
    if not all(_pts(a) < _pts(b) for a, b in zip(packets, packets[1:])):
        return False
    return 2 * sum(1 for p in packets if p.dts is None or p.dts == p.pts) > len(packets)


def _log_text(message: tuple) -> str:
    return f"{message[1]}: {str(message[2]).strip()}"


def _failure_reason(run: _Run, window: _Window, missing: int) -> str:
    first = f" (first: {run.errors[0]})" if run.errors else ""
    if window.from_file_start:
        return f"decode: {missing} wanted frame(s) were not produced by a decode from the start of the file{first}"
    return f"decode: no trusted decode of {missing} wanted frame(s) from any keyframe{first}"


def _share_ms(tasks: list[ClipTask], t0: float) -> None:
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(tasks))
    for t in tasks:
        t.ms += ms
