"""CPU time per exact middle frame: this pipeline vs ffmpeg input seek, decoding from the start,
decord, and the keyframe bound, on generated 720p H.264 (long GOP 250 with B-frames, short GOP, and a
file whose keyframes are not clean random-access points: periodic intra refresh, no IDR after the first).

Every method must return the exact frame (checked with the frame-index stamp) and delivers what the
pipeline stores for a middle frame: the RGB frame and its squashed copy (--frame-size). The table reports
CPU time (process + children, single-threaded decoding) per clip, each call opening the file as a
per-clip worker would. Writes docs/bench/pipeline.md.

    python bench/bench_pipeline.py [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from pipeline.decode import FrameSpec, decode_video_clips
from pipeline.frame_convert import squash
from pipeline.machine import load_average, machine_line
from pipeline.metadata import ClipRow
from pipeline.pyav_reader import open_video
from synthetic.stamp import draw_stamp, read_stamp

ROOT = Path(__file__).resolve().parent.parent
W, H, FPS = 1280, 720, 30
FRAME_SIZE = FrameSpec().frame_size


def make_video(path: Path, seconds: int, gop: int, fixed_b: bool, intra_refresh: bool = False) -> None:
    """720p H.264 with B-frames: a panning textured scene plus a moving block, every frame stamped."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (H // 8 + 40, W // 8 + 80, 3), dtype=np.uint8)
    tex = np.kron(tex, np.ones((8, 8, 1), np.uint8))  # 8x8 blocks: detail the encoder must code
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream(
            "libx264",
            rate=FPS,
            options={
                "preset": "veryfast",
                "crf": "23",
                "g": str(gop),
                "keyint_min": str(gop),
                "bf": "3",
                "sc_threshold": "0",
                "threads": "2",
                **({"x264-params": "b-adapt=0"} if fixed_b else {}),
                **({"x264-params": "intra-refresh=1"} if intra_refresh else {}),
            },
        )
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(seconds * FPS):
            y0, x0 = (i // 2) % (tex.shape[0] - H), i % (tex.shape[1] - W)
            frame = tex[y0 : y0 + H, x0 : x0 + W].copy()
            bx = (i * 7) % (W - 200)
            frame[200:400, bx : bx + 200] = (255, 128, 0)
            draw_stamp(frame, i)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))


def targets(seconds: int, n: int, seed: int) -> list[int]:
    """Frame indices of clip middles, spread over the video (avoid the first keyframe's trivial case)."""
    rng = np.random.default_rng(seed)
    return sorted(int(x) for x in rng.integers(FPS, (seconds - 1) * FPS, n))


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ru.ru_utime + ru.ru_stime


# ---- methods: each returns the decoded RGB frame for frame index i (one file open per call)


def m_pipeline(skip_nonref: bool, checks: bool = True) -> Callable[[Path, int], np.ndarray]:
    spec = FrameSpec(frames=0, skip_nonref=skip_nonref, checks=checks)

    def run(path: Path, i: int) -> np.ndarray:
        # A span whose middle is frame i: [t - 0.5 s, t + 0.5 s + half a frame).
        t = Fraction(i, FPS)
        row = ClipRow(0, "x.1.mp4", "x", float(t - Fraction(1, 2)), float(t + Fraction(1, 2)), "bench")
        (res,) = decode_video_clips(path, [row], spec)
        assert res.middle is not None, res.error
        return res.middle

    return run


def stored(fn: Callable[[Path, int], np.ndarray]) -> Callable[[Path, int], np.ndarray]:
    """A baseline that also makes the squashed copy the pipeline stores, so every method delivers the
    same outputs and the ratios compare how the frame is decoded."""

    def run(path: Path, i: int) -> np.ndarray:
        frame = fn(path, i)
        squash(frame, FRAME_SIZE)
        return frame

    return run


def _seek(
    c: av.container.InputContainer, i: int, seek: bool = True
) -> tuple[av.video.stream.VideoStream, int]:
    """One decoding thread, the demuxer at the keyframe before frame i (seek) or at the start;
    returns (stream, pts of frame i)."""
    v = c.streams.video[0]
    v.codec_context.thread_type = "NONE"
    v.codec_context.thread_count = 1
    pts = round(Fraction(i, FPS) / Fraction(v.time_base or 1))
    if seek:
        c.seek(pts, backward=True, stream=v)
    return v, pts


def m_reference_floor(path: Path, i: int) -> np.ndarray:
    """The least exact work without knowing which references a frame uses: seek, decode only reference
    pictures and the target, stop once it is fed (no checks, no retries; the pipeline's open)."""
    with open_video(str(path)) as c:
        v, pts = _seek(c, i)
        cc = v.codec_context
        for p in c.demux(v):
            if p.size == 0:
                break
            target = p.pts == pts
            cc.skip_frame = "DEFAULT" if target else "NONREF"
            frames = list(cc.decode(p)) + (list(cc.decode(None)) if target else [])
            for f in frames:
                if f.pts == pts:
                    return f.to_ndarray(format="rgb24")
            if target:
                break  # drained without it (a picture shown before the keyframe)
    raise RuntimeError("frame not found")


def _decode_work(path: Path, i: int, skip: Literal["DEFAULT", "NONREF", "BIDIR"]) -> float:
    """CPU seconds to decode from the keyframe before frame i through its packet, skipping `skip`."""
    with av.open(str(path)) as c:
        v, pts = _seek(c, i)
        cc = v.codec_context
        cc.skip_frame = skip
        c0 = cpu()
        for p in c.demux(v):
            if p.size == 0 or (p.dts is not None and p.dts > pts):
                break
            cc.decode(p)
        return cpu() - c0


def decode_shares(path: Path, idx: list[int]) -> tuple[float, float]:
    """Shares of the decode work from the keyframe to the targets: (reference pictures, I/P pictures).
    With one reference per P-picture (x264 veryfast), every I/P picture up to a target is needed, so
    the second share bounds any exact decode from the keyframe; the first is what NONREF leaves."""
    every = sum(_decode_work(path, i, "DEFAULT") for i in idx)
    refs = sum(_decode_work(path, i, "NONREF") for i in idx)
    intra_p = sum(_decode_work(path, i, "BIDIR") for i in idx)
    return refs / every, intra_p / every


def _decode_to(path: Path, i: int, seek: bool) -> np.ndarray:
    """Single-threaded PyAV: decode every frame (from the keyframe before frame i, or from the start)."""
    with av.open(str(path)) as c:
        v, pts = _seek(c, i, seek)
        for f in c.decode(v):
            if f.pts == pts:
                return f.to_ndarray(format="rgb24")
    raise RuntimeError("frame not found")


def m_keyframe_bound(path: Path, i: int) -> np.ndarray:
    return _decode_to(path, i, seek=True)


def m_from_start(path: Path, i: int) -> np.ndarray:
    return _decode_to(path, i, seek=False)


def m_decord(path: Path, i: int) -> np.ndarray:
    import decord

    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return vr.get_batch([i]).asnumpy()[0]
    except Exception as e:  # decord's own error types: counted as no exact frame
        raise RuntimeError(str(e)) from e


def m_ffmpeg(ffmpeg: str) -> Callable[[Path, int], np.ndarray]:
    def run(path: Path, i: int) -> np.ndarray:
        # Input seeking (-ss before -i): ffmpeg outputs the first frame with pts >= t, so aim a quarter
        # frame early (the frame's own time, printed as decimal, could round up past its pts).
        t = (i - 0.25) / FPS
        cmd = [
            ffmpeg,
            "-v",
            "error",
            "-threads",
            "1",
            "-ss",
            f"{t:.6f}",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-filter_threads",
            "1",
            "-",
        ]
        raw = subprocess.run(cmd, check=True, capture_output=True).stdout
        return np.frombuffer(raw, np.uint8).reshape(H, W, 3)

    return run


def shard_costs(path: Path, seconds: int, clip_s: float) -> dict[str, float]:
    """CPU ms per clip for contiguous clips covering the video, T=12 + middle, three ways."""
    import decord

    spans = []
    t = 0.25
    while t + clip_s < seconds - 0.25:
        spans.append((t, t + clip_s))
        t += clip_s + 0.1
    rows = [ClipRow(k, f"x.{k + 1}.mp4", "x", a, b, "bench") for k, (a, b) in enumerate(spans)]
    spec = FrameSpec(frames=12)
    out: dict[str, float] = {}
    c0 = cpu()
    res = decode_video_clips(path, rows, spec)
    out["this pipeline, one call per video"] = (cpu() - c0) * 1000 / len(rows)
    assert all(r.status == "ok" for r in res)
    c0 = cpu()
    for row in rows:
        (r,) = decode_video_clips(path, [row], spec)
        assert r.status == "ok"
    out["this pipeline, one call per clip"] = (cpu() - c0) * 1000 / len(rows)
    c0 = cpu()
    for r in res:  # decord with the same frame indices (constant 30 fps video)
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        idx = sorted({round(x * FPS) for x in [r.middle_time or 0.0, *r.frame_times]})
        vr.get_batch(idx).asnumpy()
    out["decord get_batch, one reader per clip"] = (cpu() - c0) * 1000 / len(rows)
    out["clips"] = len(rows)
    return out


FLOOR = "reference floor (seek, decode references + the target, nothing else)"


def find_ffmpeg() -> tuple[str | None, str]:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe, ""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "ffmpeg"], check=True, capture_output=True, timeout=600
            )
        except (subprocess.SubprocessError, OSError) as e:
            return None, f"ffmpeg not installed and `apt-get install -y ffmpeg` failed ({type(e).__name__})"
        exe = shutil.which("ffmpeg")
        if exe:
            return exe, ""
    return None, "no ffmpeg binary on this machine"


def ffmpeg_version(exe: str) -> str:
    out = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.splitlines()
    return out[0] if out else "ffmpeg"


def measure(fn: Callable[[Path, int], np.ndarray], path: Path, i: int) -> tuple[float, int]:
    """(CPU ms, 1 if the frame is not frame i else 0)."""
    c0 = cpu()
    try:
        frame = fn(path, i)
    except (RuntimeError, AssertionError, subprocess.CalledProcessError):  # no frame at all: not exact
        return (cpu() - c0) * 1000, 1
    ms = (cpu() - c0) * 1000
    try:
        return ms, int(read_stamp(frame) != i)
    except ValueError:
        return ms, 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="20 s videos, 6 targets")
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated videos here")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "pipeline.md")
    args = ap.parse_args()
    seconds, n = (20, 6) if args.quick else (60, 24)
    load_start = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    workdir = args.keep or tmp
    workdir.mkdir(parents=True, exist_ok=True)
    ffmpeg, ffmpeg_note = find_ffmpeg()
    # (GOP, fixed B pattern): x264 veryfast's adaptive B decision uses few B-frames on this content;
    # b-adapt=0 always codes 3 B-frames (the middle one a reference, b-pyramid), as slower presets
    # tend to on real footage.
    variants = {
        "GOP 250, adaptive B": (250, False, False),
        "GOP 250, 3 B (pyramid)": (250, True, False),
        "GOP 30, adaptive B": (30, False, False),
        # Not clean: every keyframe after the first starts a refresh; the pipeline falls back to
        # decoding from the start (its exact cost), the keyframe bound and decord are not exact there.
        "GOP 250, intra refresh (not clean)": (250, False, True),
    }
    methods: dict[str, Callable[[Path, int], np.ndarray]] = {
        "this pipeline (PyAV, NONREF skipped)": m_pipeline(True),
        "this pipeline, real-world checks off": m_pipeline(True, checks=False),
        "this pipeline, NONREF skipping off": m_pipeline(False),
        "keyframe bound (PyAV: seek, decode every frame)": stored(m_keyframe_bound),
        FLOOR: stored(m_reference_floor),
        "decord get_batch": stored(m_decord),
    }
    if ffmpeg:
        methods["ffmpeg CLI, input seek (-ss before -i)"] = stored(m_ffmpeg(ffmpeg))
    methods["decode from the start (PyAV)"] = stored(m_from_start)
    results: dict[str, dict[str, tuple[float, float, int]]] = {}
    shares: dict[str, tuple[float, float]] = {}
    try:
        for vname, (gop, fixed_b, refresh) in variants.items():
            tag = ("_fixedb" if fixed_b else "") + ("_refresh" if refresh else "")
            path = workdir / f"bench_720p_{seconds}s_gop{gop}{tag}.mp4"
            if not path.exists():
                t0 = time.time()
                make_video(path, seconds, gop, fixed_b, refresh)
                print(f"generated {path.name} in {time.time() - t0:.0f}s", file=sys.stderr)
            idx = targets(seconds, n, seed=gop)
            # Round robin over methods per target, so that load from other processes on the machine
            # hits every method alike.
            per: dict[str, tuple[list[float], list[int]]] = {m: ([], []) for m in methods}
            for fn in methods.values():
                measure(fn, path, idx[0])  # warm the page cache and imports
            for i in idx:
                for mname, fn in methods.items():
                    ms, wrong = measure(fn, path, i)
                    per[mname][0].append(ms)
                    per[mname][1].append(wrong)
            shares[vname] = decode_shares(path, idx)
            for mname, (times, wrongs) in per.items():
                med = statistics.median(times)
                results.setdefault(mname, {})[vname] = (med, statistics.mean(times), sum(wrongs))
                print(f"{vname:24s} {mname:50s} median {med:8.1f} ms  wrong {sum(wrongs)}", file=sys.stderr)
        # The GOP-250 adaptive-B video of the first variant.
        shard = shard_costs(workdir / f"bench_720p_{seconds}s_gop250.mp4", seconds, clip_s=6.0)
        print(shard, file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # empty when --keep is given
    load = f"1-min load average {load_start:.1f} at the start, {load_average():.1f} at the end"
    write_report(
        args.out, results, shares, variants, seconds, n, ffmpeg, ffmpeg_note, args.quick, shard, load
    )
    return 0


def write_report(
    out: Path,
    results: dict,
    shares: dict[str, tuple[float, float]],
    variants: dict,
    seconds: int,
    n: int,
    ffmpeg: str | None,
    ffmpeg_note: str,
    quick: bool,
    shard: dict[str, float],
    load: str,
) -> None:
    base = "this pipeline (PyAV, NONREF skipped)"
    lines = [
        "## Pipeline: CPU time per exact middle frame",
        "",
        f"{machine_line()}; {dt.date.today().isoformat()}; `bench/bench_pipeline.py{' --quick' if quick else ''}`; {load}.",
        f"Generated {W}x{H} {FPS} fps H.264 (x264 veryfast, crf 23, up to 3 B-frames), {seconds} s per variant;",
        f"{n} middle-frame targets spread over each video, the same for every method. CPU time = process +",
        "children (single-threaded decoding), per clip, each call opening the file. Mean ms over the",
        "targets (the total CPU a corpus costs), median in brackets;",
        "`wrong` counts frames whose stamp is not the target index. Ratio = method / this pipeline.",
        f"Every method delivers the same outputs: the RGB frame and its {FRAME_SIZE}x{FRAME_SIZE} squashed copy",
        "(the pipeline stores both; the baselines get the same squash call). The reference floor is the",
        "least work of any exact method that cannot tell which reference pictures a frame uses: it decodes",
        "every reference picture from the keyframe, as this pipeline does, with none of its checks.",
        "",
        "| method | " + " | ".join(f"{v}: mean [median] ms, ratio" for v in variants) + " | wrong frames |",
        "|---|" + "---|" * len(variants) + "---|",
    ]
    for mname, per in results.items():
        cells = [
            f"{per[v][1]:.0f} [{per[v][0]:.0f}], {per[v][1] / results[base][v][1]:.2f}x" for v in variants
        ]
        wrong = sum(per[v][2] for v in variants)
        lines.append(f"| {mname} | " + " | ".join(cells) + f" | {wrong} / {n * len(variants)} |")
    lines.append("")
    if ffmpeg:
        lines.append(
            f"ffmpeg: {ffmpeg_version(ffmpeg)}; PyAV {av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})."
        )
    else:
        lines.append(f"ffmpeg CLI row skipped: {ffmpeg_note}.")
    lines.append("")
    kb = "keyframe bound (PyAV: seek, decode every frame)"
    for v in variants:
        p = results[base][v][1]  # ratios of means
        parts = [f"vs keyframe bound {p / results[kb][v][1]:.2f}x (goal <= 0.75x)"]
        parts.append(f"reference floor vs keyframe bound {results[FLOOR][v][1] / results[kb][v][1]:.2f}x")
        parts.append(
            f"decode work from the keyframe: reference pictures {shares[v][0]:.0%}, I/P pictures {shares[v][1]:.0%}"
        )
        checks_off = results["this pipeline, real-world checks off"][v][1]
        parts.append(f"the real-world checks cost {100 * (p / checks_off - 1):+.1f}% (goal <= 5%)")
        fm = "ffmpeg CLI, input seek (-ss before -i)"
        if fm in results:
            parts.append(f"{results[fm][v][1] / p:.1f}x faster than ffmpeg input seek (goal >= 1.5x)")
        start = results["decode from the start (PyAV)"][v][1]
        parts.append(f"{start / p:.1f}x faster than decoding from the start (goal >= 8x)")
        parts.append(f"decord / pipeline {results['decord get_batch'][v][1] / p:.2f}x")
        lines.append(f"- {v}: " + "; ".join(parts) + ".")
    lines += [
        "",
        f"**Whole video, T=12 + middle** ({shard['clips']:.0f} contiguous 6 s clips of the GOP-250 adaptive-B",
        "video, CPU ms per clip; each video is decoded once for all of its clips in a shard):",
        "",
        "| method | CPU ms per clip | ratio |",
        "|---|---|---|",
    ]
    one = shard["this pipeline, one call per video"]
    for k, v in shard.items():
        if k != "clips":
            lines.append(f"| {k} | {v:.1f} | {v / one:.2f}x |")
    lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
