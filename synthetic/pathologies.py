"""A corpus of real-world decoding pathologies, tiny and generated, with its truth.

Each file reproduces one way real video breaks frame extraction (docs/CORPUS.md, "Pathologies"):
keyframes that are not clean random-access points (x264 open GOP, periodic intra refresh with no IDR,
sync flags remuxed onto P-frames, a 4:4:4 open-GOP stream stripped of its recovery points), B-frames
whose timestamps are decode order (mpeg4 in AVI, and remuxed with pts = dts into Matroska), limited
vs full range and BT.601 vs BT.709 colour, a non-square sample aspect ratio, rotation and VFR.

The truth of a file is a decode from its start with PyAV: every frame in output order with its
presentation time (output position / stream rate where the container's timestamps are decode order)
and its stamp (synthetic.stamp), or, for the colour files, its decoded planes. `check_pathologies`
runs `pipeline.decode` over every file and reports any clip that is ok with a frame other than the
truth's; a failure with a reason is allowed, a wrong frame never.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.decode import FrameSpec, decode_video_clips
from pipeline.frame_select import nearest_position, sampled_positions
from pipeline.metadata import ClipRow
from synthetic.stamp import draw_stamp, read_stamp

WIDTH, HEIGHT, FRAMES, RATE = 96, 64, 40, 30
TRUTH = "pathologies.json"
OUTPUT_ORDER_FILES = ("b_frames.avi", "decode_order_pts.mkv")


def _pictures(n: int, width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> Iterator[np.ndarray]:
    """Smooth moving content (so B/P prediction is real) with each frame's index stamped."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(base, 8, 0), 8, 1)[:height]
    for i in range(n):
        a = np.ascontiguousarray(np.roll(big, 2 * i, axis=1)[:, :width])
        draw_stamp(a, i)
        yield a


def _encode(
    path: Path,
    fmt: str,
    codec: str,
    options: dict[str, str],
    *,
    pix_fmt: str = "yuv420p",
    n: int = FRAMES,
    setup: Callable[[Any], None] | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int = 0,
) -> None:
    """Stamped pictures (display orientation) -> a file; with `rotation` the coded picture is turned
    so that the display matrix brings it back."""
    k = rotation // 90
    with av.open(str(path), "w", format=fmt) as out:
        s: Any = out.add_stream(codec, rate=RATE)
        s.width, s.height = (HEIGHT, WIDTH) if k % 2 else (WIDTH, HEIGHT)
        s.pix_fmt = pix_fmt
        s.codec_context.thread_count = 1
        if time_base is not None:
            s.codec_context.time_base = time_base
        if setup is not None:
            setup(s)
        s.codec_context.options = options
        if rotation:
            s.set_display_rotation(rotation)
        for i, a in enumerate(_pictures(n)):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(a, -k)), format="rgb24")
            vf.pts = pts[i] if pts is not None else i
            if time_base is not None:
                vf.time_base = time_base
            out.mux(s.encode(vf))
        out.mux(s.encode(None))


def _x264(params: str) -> dict[str, str]:
    return {"preset": "veryfast", "crf": "20", "threads": "1", "x264-params": params}


def _remux(src: Path, dst: Path, fmt: str, edit: Callable[[av.Packet, int], av.Packet]) -> None:
    """Copy the video packets of src into dst through `edit(packet, k)`, which returns the packet to mux."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt) as o:
        si = i.streams.video[0]
        so = o.add_stream_from_template(si)
        k = 0
        for p in i.demux(si):
            if not p.size:
                continue
            q = edit(p, k)
            q.stream = so
            o.mux(q)
            k += 1
    src.unlink()


def _strip_sei(p: av.Packet, _k: int) -> av.Packet:
    """Drop every SEI NAL (recovery points included) from a 4-byte length-prefixed H.264 packet."""
    data, out, i = bytes(p), bytearray(), 0
    while i + 4 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        nal = data[i + 4 : i + 4 + size]
        if nal and nal[0] & 0x1F != 6:
            out += data[i : i + 4 + size]
        i += 4 + size
    q = av.Packet(bytes(out))
    q.pts, q.dts, q.time_base, q.is_keyframe = p.pts, p.dts, p.time_base, p.is_keyframe
    return q


def _decode_order_pts(p: av.Packet, _k: int) -> av.Packet:
    p.pts = p.dts
    return p


def _sync_every(n: int) -> Callable[[av.Packet, int], av.Packet]:
    def edit(p: av.Packet, k: int) -> av.Packet:
        p.is_keyframe = k % n == 0
        return p

    return edit


def _colour_file(path: Path, full: bool, bt709: bool) -> None:
    """YUV planes written directly (no RGB round trip), tagged with range and matrix, plus a white
    patch (Y at the range's top, neutral chroma) that must come out as 255."""
    rng = np.random.default_rng(1)
    lo, hi = (0, 255) if full else (16, 235)
    with av.open(str(path), "w", format="mp4") as out:
        s: Any = out.add_stream("libx264", rate=RATE)
        s.width, s.height, s.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        cc = s.codec_context
        cc.color_range = 2 if full else 1
        cc.colorspace = 1 if bt709 else 5
        cc.color_primaries = 1 if bt709 else 6
        cc.color_trc = 1 if bt709 else 6
        cc.options = _x264("keyint=10:bframes=2") | {"crf": "12"}
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
        for i in range(20):
            y = np.clip(lo + (hi - lo) * ((xx + 3 * i) % WIDTH) / WIDTH + rng.normal(0, 2, xx.shape), lo, hi)
            y[:16, :16] = hi
            u = np.clip(128 + 60 * np.sin((yy[::2, ::2] + i) / 7), lo, 240 if not full else 255)
            v = np.clip(128 + 60 * np.cos((xx[::2, ::2] - i) / 9), lo, 240 if not full else 255)
            u[:8, :8] = v[:8, :8] = 128
            f = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            for plane, arr in zip(f.planes, (y, u, v)):
                view = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
                view[: arr.shape[0], : arr.shape[1]] = arr.round().astype(np.uint8)
            f.color_range = cc.color_range
            f.colorspace = cc.colorspace
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))


def _build(out: Path) -> dict[str, str]:
    """Write every file; returns name -> what it reproduces."""
    what: dict[str, str] = {}

    def tmp(name: str) -> Path:
        return out / f".{name}.src.mp4"

    _encode(
        out / "open_gop.mp4",
        "mp4",
        "libx264",
        _x264("keyint=12:min-keyint=12:open-gop=1:bframes=3:scenecut=0"),
    )
    what["open_gop.mp4"] = "x264 open GOP: non-IDR I-frames with recovery points, leading B-frames"
    _encode(
        out / "intra_refresh.mp4", "mp4", "libx264", _x264("keyint=12:intra-refresh=1:bframes=0:scenecut=0")
    )
    what["intra_refresh.mp4"] = "periodic intra refresh, no IDR after the first frame"
    _encode(tmp("sync_on_p"), "mp4", "libx264", _x264("keyint=60:bframes=0:scenecut=0:ref=3"))
    _remux(tmp("sync_on_p"), out / "sync_on_p.nut", "nut", _sync_every(8))
    what["sync_on_p.nut"] = "sync-sample flags remuxed onto P-frames"
    _encode(
        tmp("no_sei_444"),
        "mp4",
        "libx264",
        _x264("keyint=12:min-keyint=12:open-gop=1:bframes=2:ref=4:scenecut=0"),
        pix_fmt="yuv444p",
    )
    _remux(tmp("no_sei_444"), out / "no_recovery_point_444.nut", "nut", _strip_sei)
    what["no_recovery_point_444.nut"] = "High 4:4:4, non-IDR I-frames marked sync without recovery points"
    _encode(out / "b_frames.avi", "avi", "mpeg4", {"bf": "2", "qscale": "3", "g": "12"})
    what["b_frames.avi"] = "MPEG-4 Part 2 with B-frames in AVI (decode-order container timestamps)"
    _encode(tmp("decode_order"), "mp4", "mpeg4", {"bf": "2", "qscale": "3", "g": "12"})
    _remux(tmp("decode_order"), out / "decode_order_pts.mkv", "matroska", _decode_order_pts)
    what["decode_order_pts.mkv"] = "B-frames whose pts are decode order: output pts go backwards"
    for full in (False, True):
        for bt709 in (False, True):
            name = f"colour_{'full' if full else 'limited'}_{'bt709' if bt709 else 'bt601'}.mp4"
            _colour_file(out / name, full, bt709)
            what[name] = f"{'full' if full else 'limited'} range, {'BT.709' if bt709 else 'BT.601'} matrix"

    def sar(s: Any) -> None:
        s.codec_context.sample_aspect_ratio = Fraction(16, 9)

    _encode(out / "sar_16_9.mp4", "mp4", "libx264", _x264("keyint=12:bframes=2"), setup=sar)
    what["sar_16_9.mp4"] = "non-square pixels (SAR 16:9): displays at 171x64"

    _encode(out / "rotated_90.mp4", "mp4", "libx264", _x264("keyint=12:bframes=2"), rotation=90)
    what["rotated_90.mp4"] = "display matrix rotation 90 degrees"
    durations = [3000, 2400, 4500, 3000, 3750]
    vfr_pts = [sum(durations[j % 5] for j in range(i)) for i in range(FRAMES)]
    _encode(
        out / "vfr.mp4",
        "mp4",
        "libx264",
        _x264("keyint=12:bframes=2"),
        pts=vfr_pts,
        time_base=Fraction(1, 90000),
    )
    what["vfr.mp4"] = "variable frame rate"
    return what


@dataclass(frozen=True)
class TruthFrame:
    time: Fraction  # presentation time (s) the contract defines
    stamp: int | None  # synthetic.stamp index, None for the colour files
    pts: int | None


def truth_frames(path: Path) -> list[TruthFrame]:
    """Decode from the start with PyAV: every frame in output order, with the time CONTRACTS §2 uses."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        tb, start = Fraction(s.time_base or 1), s.start_time or 0
        rate = Fraction(s.average_rate or s.guessed_rate or RATE)
        frames = []
        for i, f in enumerate(c.decode(s)):
            if path.name in OUTPUT_ORDER_FILES:
                t = Fraction(i) / rate
            else:
                assert f.pts is not None
                t = (f.pts - start) * tb
            rgb = np.rot90(f.to_ndarray(format="rgb24"), round((f.rotation or 0) / 90))
            stamp = None if path.name.startswith("colour_") else read_stamp(np.ascontiguousarray(rgb))
            frames.append(TruthFrame(t, stamp, f.pts))
    return frames


def write_pathologies(out: Path) -> dict[str, Any]:
    """Write the corpus and its truth (pathologies.json) into `out`; returns the truth."""
    out.mkdir(parents=True, exist_ok=True)
    what = _build(out)
    truth: dict[str, Any] = {}
    for name, reason in what.items():
        frames = truth_frames(out / name)
        truth[name] = {
            "reproduces": reason,
            "time_source": "output_order" if name in OUTPUT_ORDER_FILES else "pts",
            "times": [str(f.time) for f in frames],
            "stamps": [f.stamp for f in frames],
        }
    (out / TRUTH).write_text(json.dumps(truth, indent=1))
    return truth


def check_pathologies(root: Path, decoder: str = "pyav") -> list[str]:
    """Decode clips of every pathology file with the pipeline; returns one line per wrong frame (an
    ok clip whose middle or sampled frames are not the truth's). Failures with a reason are not wrong."""
    truth = json.loads((root / TRUTH).read_text())
    problems = []
    for name, info in truth.items():
        if name.startswith("colour_"):
            continue  # checked by pixels in tests/test_decode_colour.py
        times = [Fraction(t) for t in info["times"]]
        stamps = info["stamps"]
        q = Fraction(1, 4 * RATE)  # spans fall between frames, as millisecond spans of real videos do
        cuts = ((0, 8), (5, 20), (13, 31), (20, len(times) - 1))
        rows = [
            ClipRow(k, f"{name}.{k}", name, float(times[a] + q), float(times[b] + q), "pathologies")
            for k, (a, b) in enumerate(cuts)
        ]
        for res in decode_video_clips(root / name, rows, FrameSpec(frames=6), decoder=decoder):
            if res.status != "ok":
                continue
            start, end = res.row.span_fractions
            clip = [i for i, t in enumerate(times) if start <= t < end]
            mid = clip[nearest_position([times[i] for i in clip], (start + end) / 2)]
            want = [stamps[clip[p]] for p in sampled_positions(len(clip), 6)]
            got_mid = read_stamp(res.middle) if res.middle is not None else None
            got = [read_stamp(f) for f in res.frames]
            if got_mid != stamps[mid] or got != want:
                problems.append(
                    f"{name} [{float(start):.3f}, {float(end):.3f}): middle {got_mid} != {stamps[mid]} or frames {got} != {want}"
                )
    return problems
