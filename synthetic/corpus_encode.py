"""Rendering and encoding the synthetic corpus's files: stamped frames -> H.264 mp4 (optionally with an
AAC track), one job per file group, run in order or on worker processes (same bytes either way)."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.cli import sigint_ignored, stop_pool_on_interrupt
from pipeline.frame_convert import CLIP_VIDEO_X264_PARAMS
from synthetic.content import Scene, SceneRenderer, background
from synthetic.corpus_plan import CorpusConfig, VideoPlan
from synthetic.stamp import band_top, draw_stamp

log = logging.getLogger(__name__)

_AUDIO_RATE = 48000
_AUDIO_FRAME = 1024  # frames of background before the first clip and after the last


def _display_to_coded(frame: np.ndarray, rotation: int) -> np.ndarray:
    """The stored picture whose display (rotated by `rotation` degrees counter-clockwise) is `frame`."""
    return np.ascontiguousarray(np.rot90(frame, k=-(rotation // 90))) if rotation else frame


class _Painter:
    """Unstamped display-orientation frames of one planned video."""

    def __init__(self, cfg: CorpusConfig, plan: VideoPlan) -> None:
        content = band_top(cfg.height)
        self.plan = plan
        self.idle = background(cfg.height, cfg.width, plan.idle.background, plan.idle.noise_seed)
        self.renderers = [SceneRenderer(c.scene, cfg.height, cfg.width, content) for c in plan.clips]

    def frame(self, index: int) -> np.ndarray:
        for clip, renderer in zip(self.plan.clips, self.renderers, strict=True):
            if clip.first <= index < clip.end:
                return renderer.render((index - clip.first) / max(1, clip.end - clip.first - 1))
        return self.idle.copy()

    def frames(self, first: int, end: int) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(first, end))


def _stamped(frames: Iterable[np.ndarray], rotation: int) -> Iterator[np.ndarray]:
    for index, frame in enumerate(frames):
        draw_stamp(frame, index)
        yield _display_to_coded(frame, rotation)


def encode_video(
    path: Path,
    frames: Iterable[np.ndarray],
    pts: Sequence[int],
    time_base: Fraction,
    cfg: CorpusConfig,
    *,
    rate: Fraction | None = None,
    rotation: int = 0,
    audio_seconds: float | None = None,
) -> int:
    """Encode RGB frames (coded orientation) to an H.264 mp4 at `path`, atomically; returns frame count.

    With `audio_seconds`, an AAC tone of that length is added as stream 0, before the video stream.
    """
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with av.open(str(tmp), "w", format="mp4") as container:
        # Every stream must exist before the first packet is muxed (the header is written then).
        audio = container.add_stream("aac", rate=_AUDIO_RATE) if audio_seconds is not None else None
        stream = container.add_stream(
            "libx264",
            rate=rate,
            options={
                "preset": cfg.preset,
                "crf": str(cfg.crf),
                "g": str(cfg.gop),
                "bf": str(cfg.bframes),
                "sc_threshold": "0",  # keyframes only every `gop` frames, so seeks must decode far
                "threads": "1",  # x264 is bitwise deterministic only single-threaded
                "x264-params": CLIP_VIDEO_X264_PARAMS,  # ... and without mbtree (see there)
            },
        )
        stream.codec_context.time_base = time_base
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame_rgb, p in zip(frames, pts, strict=True):
            if count == 0:
                stream.height, stream.width = frame_rgb.shape[:2]
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            frame.pts = p
            frame.time_base = time_base
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
        if audio is not None and audio_seconds is not None:
            _encode_tone(container, audio, audio_seconds)
    tmp.replace(path)
    return count


def _encode_tone(container: Any, stream: Any, seconds: float) -> None:
    """Mux a quiet 440 Hz tone (mono, 48 kHz): real videos have sound, and a stream 0 that isn't video."""
    total = round(seconds * _AUDIO_RATE)
    for start in range(0, total, _AUDIO_FRAME):
        n = min(_AUDIO_FRAME, total - start)
        t = (start + np.arange(n)) / _AUDIO_RATE
        samples = (0.1 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = _AUDIO_RATE
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


# ---- encoding jobs (one file group each; independent, so they can run in parallel) -------------------


def write_full_video(out: Path, cfg: CorpusConfig, plan: VideoPlan) -> int:
    """The `full`-layout file of one video and its `clips`-layout files; returns frames encoded."""
    rate = None if plan.vfr else cfg.fps_fraction
    painter = _Painter(cfg, plan)
    encode_video(
        out / "videos" / f"{plan.video_id}.mp4",
        _stamped(painter.frames(0, len(plan.pts)), plan.rotation),
        plan.pts,
        plan.time_base,
        cfg,
        rate=rate,
        rotation=plan.rotation,
        audio_seconds=plan.audio_seconds(0, len(plan.pts)),
    )
    clip_dir = out / "clips" / plan.video_id
    clip_dir.mkdir(exist_ok=True)
    for clip in plan.clips:
        base = plan.pts[clip.first]
        encode_video(
            clip_dir / clip.clip_id,
            _stamped(painter.frames(clip.first, clip.end), plan.rotation),
            [p - base for p in plan.pts[clip.first : clip.end]],
            plan.time_base,
            cfg,
            rate=rate,
            rotation=plan.rotation,
            audio_seconds=plan.audio_seconds(clip.first, clip.end),
        )
    return len(plan.pts) + sum(c.end - c.first for c in plan.clips)


def write_downstream_video(path: Path, cfg: CorpusConfig, scene: Scene, num_frames: int) -> int:
    """One downstream (MSR-VTT-style) video of `scene`; returns frames encoded."""
    renderer = SceneRenderer(scene, cfg.height, cfg.width, band_top(cfg.height))
    frames = (renderer.render(i / (num_frames - 1)) for i in range(num_frames))
    fps = cfg.fps_fraction
    return encode_video(path, _stamped(frames, 0), range(num_frames), 1 / fps, cfg, rate=fps)


def run_jobs(jobs: list[tuple[str, Callable[..., int], tuple[Any, ...]]], workers: int) -> None:
    """Run (name, fn, args) jobs in order or on `workers` processes, logging frames/s and ETA."""
    started = time.monotonic()
    done = frames = 0

    def report(name: str, count: int) -> None:
        nonlocal done, frames
        done, frames = done + 1, frames + count
        elapsed = max(time.monotonic() - started, 1e-9)
        eta = elapsed / done * (len(jobs) - done)
        log.info("%d/%d %s: %.0f frames/s, ETA %.1fs", done, len(jobs), name, frames / elapsed, eta)

    if workers <= 1:
        for name, fn, args in jobs:
            report(name, fn(*args))
        return
    # spawn, not fork: the caller may hold threads (pytest plugins, Ray, torch) that fork would copy.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool, stop_pool_on_interrupt(pool):
        with sigint_ignored():  # the workers are started here: Ctrl-C is the parent's to handle
            futures = {pool.submit(fn, *args): name for name, fn, args in jobs}
        for future in as_completed(futures):
            report(futures[future], future.result())
