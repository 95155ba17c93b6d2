"""Synthetic HD-VILA-format corpus: real files in real formats, fake (but learnable) content.

``python -m synthetic.corpus --out DIR --videos N --clips-per-video K --seed S`` writes:

    DIR/meta/part0.jsonl          HD-VILA metadata lines (11-char ids, spans "HH:MM:SS.mmm")
    DIR/videos/<video_id>.mp4     `full` layout: H.264, GOP `gop`, B-frames, yuv420p
    DIR/clips/<video_id>/<clip_id> `clips` layout: each clip re-encoded from exactly its span's frames
    DIR/subtitles.jsonl           {"clip_id", "text"}: ASR-like text naming the content loosely
    DIR/downstream/               MSR-VTT files (csv/json) and downstream/videos/<video_id>.mp4
    DIR/truth.json                written last: what every frame, clip and video holds

Every frame carries its index within its file (`synthetic.stamp`), and truth.json gives, per clip, the
frames the selection rules of CONTRACTS §2 must pick, computed here from the exact frame times. Span
boundaries lie half a frame away from any frame time and every middle point is at least 1 ms closer
to one frame than to any other, so float rounding in a reader cannot change the right answer.
Output is deterministic by seed (libx264 runs single-threaded; files are bitwise identical).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.atomic import write_text_atomic
from pipeline.cli import UserError, output_dir, run_cli, show_defaults, sigint_ignored, stop_pool_on_interrupt
from synthetic.content import (
    Scene,
    SceneRenderer,
    background,
    caption,
    draw_attributes,
    query_sentences,
    random_scene,
    subtitle,
)
from synthetic.pathologies import check_pathologies, write_pathologies
from synthetic.stamp import band_top, draw_stamp

log = logging.getLogger(__name__)

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VFR_TIME_BASE = Fraction(1, 90000)
# Frame durations of a VFR video, in 1/90000 s ticks (26.7, 33.3, 41.7, 50 ms): jittery phone-like timing.
_VFR_DURATIONS = (2400, 3000, 3000, 3000, 3750, 4500)
# A span bound closer than this to a frame time, or a middle point with a runner-up frame closer
# than this, would make the truth depend on float rounding; the planner never produces one.
_MARGIN = Fraction(1, 1000)
_MIN_EDGE_FRAMES = 6
_AUDIO_RATE = 48000
_AUDIO_FRAME = 1024  # frames of background before the first clip and after the last
# Random-stream domains, so changing one part of the config does not reshuffle the others.
_RNG_IDS, _RNG_VIDEO, _RNG_DOWNSTREAM = 1, 2, 3
# The layouts and files the generator owns inside DIR (removed by overwrite=True, nothing else).
_OUTPUTS = ("meta", "videos", "clips", "downstream", "subtitles.jsonl", "truth.json")


@dataclass(frozen=True)
class CorpusConfig:
    """Every knob of the generator; the defaults are the one place defaults live."""

    videos: int = 4
    clips_per_video: int = 3
    seed: int = 0
    width: int = 320
    height: int = 240
    fps: float = 30.0
    gop: int = 250  # keyframe interval (x264 keyint); scene-cut keyframes are disabled
    bframes: int = 2
    crf: int = 18
    preset: str = "veryfast"
    clip_seconds: tuple[float, float] = (2.0, 4.0)
    gap_seconds: tuple[float, float] = (0.3, 1.5)
    adjacent_probability: float = 0.25  # chance that a clip starts exactly where the previous one ends
    sampled_frames: int = 12  # T of CONTRACTS §2
    downstream_videos: tuple[int, int, int] = (24, 8, 8)  # train, val, test
    downstream_seconds: float = 2.0
    downstream_sentences: int = 5  # per video in MSRVTT_data.json; csv rows use the first
    rotated_videos: int = 0  # the last N videos carry a 90-degree display matrix
    vfr_videos: int = 0  # the first N videos have variable frame durations
    audio_videos: int = 0  # the first N videos (and their clips) also have an AAC track, as stream 0

    def validate(self) -> None:
        if self.videos < 0 or self.clips_per_video < 1:
            raise ValueError("need videos >= 0 and clips_per_video >= 1")
        if self.width % 2 or self.height % 2 or self.width < 64 or self.height < 64:
            raise ValueError(f"frame size {self.width}x{self.height} must be even and at least 64x64")
        if not 1.0 <= self.fps <= 240.0:
            raise ValueError(f"fps {self.fps} outside 1..240")
        if self.gop < 1 or self.bframes < 0 or self.sampled_frames < 1:
            raise ValueError("need gop >= 1, bframes >= 0, sampled_frames >= 1")
        lo, hi = self.clip_seconds
        if not 0 < lo <= hi:
            raise ValueError(f"bad clip_seconds {self.clip_seconds}")
        if not 0 <= self.gap_seconds[0] <= self.gap_seconds[1]:
            raise ValueError(f"bad gap_seconds {self.gap_seconds}")
        if min(self.downstream_videos) < 0 or len(self.downstream_videos) != 3:
            raise ValueError("downstream_videos must be three counts (train, val, test) >= 0")
        if self.downstream_seconds <= 0 or self.downstream_sentences < 1:
            raise ValueError("need downstream_seconds > 0 and downstream_sentences >= 1")
        for name in ("rotated_videos", "vfr_videos", "audio_videos"):
            if not 0 <= getattr(self, name) <= self.videos:
                raise ValueError(f"{name} must be between 0 and videos ({self.videos})")

    @property
    def fps_fraction(self) -> Fraction:
        # 29.97 -> 30000/1001, the rate NTSC-derived files really carry.
        return Fraction(self.fps).limit_denominator(1001)


@dataclass(frozen=True)
class CorpusManifest:
    """Paths of a generated corpus (see the module docstring for the layout)."""

    root: Path
    metadata: Path
    videos: Path
    clips: Path
    subtitles: Path
    truth: Path
    downstream: Path
    video_ids: tuple[str, ...]
    clip_ids: tuple[str, ...]
    downstream_ids: tuple[str, ...]
    config: CorpusConfig = field(compare=False)

    def load_truth(self) -> dict[str, Any]:
        return json.loads(self.truth.read_text())


# ---- planning ------------------------------------------------------------------------------------


@dataclass
class ClipPlan:
    clip_id: str
    first: int  # index of the first frame of the span in the full video
    end: int  # one past the last frame
    span_ms: tuple[int, int]
    scene: Scene
    subtitle: str


@dataclass
class VideoPlan:
    video_id: str
    pts: list[int]  # per frame, in time_base units
    time_base: Fraction
    vfr: bool
    rotation: int  # display matrix rotation (counter-clockwise degrees, as av.VideoFrame.rotation)
    audio: bool
    idle: Scene  # background shown between clips
    clips: list[ClipPlan]

    def time(self, index: int) -> Fraction:
        return self.pts[index] * self.time_base

    def audio_seconds(self, first: int, end: int) -> float | None:
        """Length of frames [first, end) (the last frame lasts as long as the one before it)."""
        if not self.audio:
            return None
        last = self.time(end - 1) + (self.time(end - 1) - self.time(end - 2) if end - first > 1 else 0)
        return float(last - self.time(first))


def format_timestamp(ms: int) -> str:
    """Milliseconds -> "HH:MM:SS.mmm" (the HD-VILA span format)."""
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _rng(seed: int, domain: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, domain, index])


def _random_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id."""
    return "".join(_ID_ALPHABET[int(k)] for k in rng.integers(0, len(_ID_ALPHABET), 11))


def _video_ids(seed: int, count: int) -> list[str]:
    rng = _rng(seed, _RNG_IDS)
    ids: list[str] = []
    while len(ids) < count:
        vid = _random_id(rng)
        if vid not in ids:
            ids.append(vid)
    return ids


def _frames_in(times: Sequence[Fraction], start: Fraction, end: Fraction) -> list[int]:
    """Indices of the frames with t in [start, end) -- the `full`-layout rule of CONTRACTS §2."""
    return [i for i, t in enumerate(times) if start <= t < end]


def _nearest(times: Sequence[Fraction], target: Fraction) -> tuple[int, Fraction]:
    """(index of the frame nearest to target, tie -> earlier; how much closer it is than the runner-up)."""
    order = sorted(range(len(times)), key=lambda i: (abs(times[i] - target), i))
    gap = abs(times[order[1]] - target) - abs(times[order[0]] - target) if len(order) > 1 else Fraction(1)
    return order[0], gap


def _span_ms(times: Sequence[Fraction], first: int, end: int) -> tuple[int, int] | None:
    """Span half a frame outside [first, end), rounded to ms; None if the truth would be ambiguous."""
    start_ms = round((times[first - 1] + times[first]) / 2 * 1000)
    end_ms = round((times[end - 1] + times[end]) / 2 * 1000)
    start, stop = Fraction(start_ms, 1000), Fraction(end_ms, 1000)
    if min(abs(t - b) for t in times for b in (start, stop)) <= _MARGIN:
        return None
    if _frames_in(times, start, stop) != list(range(first, end)):
        return None
    _, gap = _nearest(times, (start + stop) / 2)
    return (start_ms, end_ms) if gap > _MARGIN else None


def _plan_video(cfg: CorpusConfig, index: int, video_id: str) -> VideoPlan:
    rng = _rng(cfg.seed, _RNG_VIDEO, index)
    fps = cfg.fps_fraction
    vfr = index < cfg.vfr_videos
    rotation = -90 if index >= cfg.videos - cfg.rotated_videos else 0
    max_frames = math.ceil(
        (cfg.clips_per_video * (cfg.clip_seconds[1] + cfg.gap_seconds[1]) + 2 * cfg.gap_seconds[1] + 2)
        * float(fps)
        * 2
        + 4 * _MIN_EDGE_FRAMES
    )
    if vfr:
        durations = rng.choice(_VFR_DURATIONS, size=max_frames)
        pts = [0, *np.cumsum(durations[:-1]).tolist()]
        time_base = _VFR_TIME_BASE
    else:
        pts = list(range(max_frames))
        time_base = 1 / fps
    times = [p * time_base for p in pts]

    def frames(seconds: float) -> int:
        return max(1, round(seconds * float(fps)))

    attributes = draw_attributes(rng, cfg.clips_per_video)
    cursor = max(_MIN_EDGE_FRAMES, frames(float(rng.uniform(*cfg.gap_seconds))))
    clips: list[ClipPlan] = []
    for k, attrs in enumerate(attributes):
        if k and rng.random() >= cfg.adjacent_probability:
            cursor += max(1, frames(float(rng.uniform(*cfg.gap_seconds))))
        length = frames(float(rng.uniform(*cfg.clip_seconds)))
        length += 1 - length % 2  # odd: the middle of a CFR span is then exactly one frame
        end = cursor + length
        span = _span_ms(times, cursor, end)
        while span is None:  # only VFR timing can get here
            end += 1
            span = _span_ms(times, cursor, end)
        scene = random_scene(rng, attrs)
        clips.append(ClipPlan(f"{video_id}.{k + 1}.mp4", cursor, end, span, scene, subtitle(rng, attrs)))
        cursor = end
    total = cursor + max(_MIN_EDGE_FRAMES, frames(float(rng.uniform(*cfg.gap_seconds))))
    if total > max_frames:
        raise RuntimeError(f"planner overflow: {total} > {max_frames} frames")
    idle = random_scene(rng, attributes[0])
    audio = index < cfg.audio_videos
    return VideoPlan(video_id, pts[:total], time_base, vfr, rotation, audio, idle, clips)


# ---- rendering and encoding ----------------------------------------------------------------------


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


# ---- truth -----------------------------------------------------------------------------------------


def sampled_positions(n: int, t: int) -> list[int]:
    """floor(linspace(0, n-1, t)) in exact integer arithmetic (CONTRACTS §2; repeats when n < t)."""
    return [k * (n - 1) // (t - 1) for k in range(t)] if t > 1 else [0]


def _clip_truth(cfg: CorpusConfig, plan: VideoPlan, clip: ClipPlan) -> dict[str, Any]:
    times = [plan.time(i) for i in range(len(plan.pts))]
    start, stop = (Fraction(ms, 1000) for ms in clip.span_ms)
    indices = _frames_in(times, start, stop)
    middle, _ = _nearest(times, (start + stop) / 2)
    n = len(indices)
    sampled = [indices[p] for p in sampled_positions(n, cfg.sampled_frames)]
    return {
        "clip_id": clip.clip_id,
        "video_id": plan.video_id,
        "span": [format_timestamp(ms) for ms in clip.span_ms],
        "span_seconds": [ms / 1000 for ms in clip.span_ms],
        "fps": float(cfg.fps_fraction) if not plan.vfr else None,
        "caption": caption(clip.scene.attributes),
        "attributes": clip.scene.attributes.as_dict(),
        "subtitle": clip.subtitle,
        "full_layout": {
            "frame_indices": indices,
            "middle_index": middle,
            "middle_time": float(times[middle]),
            "sampled_indices": sampled,
            "sampled_times": [float(times[i]) for i in sampled],
        },
        "clips_layout": {
            "num_frames": n,
            "middle_index": n // 2,
            "sampled_indices": sampled_positions(n, cfg.sampled_frames),
        },
    }


def _video_truth(cfg: CorpusConfig, plan: VideoPlan) -> dict[str, Any]:
    coded = (cfg.height, cfg.width) if plan.rotation else (cfg.width, cfg.height)
    return {
        "video_id": plan.video_id,
        "path": f"videos/{plan.video_id}.mp4",
        "num_frames": len(plan.pts),
        "frame_times": [float(plan.time(i)) for i in range(len(plan.pts))],
        "fps": None if plan.vfr else float(cfg.fps_fraction),
        "vfr": plan.vfr,
        "width": cfg.width,  # display orientation
        "height": cfg.height,
        "coded_width": coded[0],
        "coded_height": coded[1],
        "rotation": plan.rotation,
        "audio": plan.audio,
        "gop": cfg.gop,
        "bframes": cfg.bframes,
        "clip_ids": [c.clip_id for c in plan.clips],
    }


# ---- downstream (MSR-VTT formats) ------------------------------------------------------------------


@dataclass
class _DownstreamPlan:
    records: list[dict[str, Any]]  # truth.json "downstream.videos"
    json_videos: list[dict[str, Any]]
    json_sentences: list[dict[str, Any]]
    scenes: list[Scene]
    num_frames: int


def _plan_downstream(cfg: CorpusConfig) -> _DownstreamPlan:
    rng = _rng(cfg.seed, _RNG_DOWNSTREAM)
    splits = [("train", cfg.downstream_videos[0]), ("validate", cfg.downstream_videos[1])]
    splits.append(("test", cfg.downstream_videos[2]))
    fps = cfg.fps_fraction
    plan = _DownstreamPlan([], [], [], [], max(2, round(cfg.downstream_seconds * float(fps))))
    for split, count in splits:
        # Distinct attribute sets within a split, so each query has one right video.
        for attrs in draw_attributes(rng, count):
            number = len(plan.records)
            video_id = f"video{number}"
            plan.scenes.append(random_scene(rng, attrs))
            sentences = query_sentences(rng, attrs, cfg.downstream_sentences)
            plan.records.append(
                {
                    "video_id": video_id,
                    "split": split,
                    "attributes": attrs.as_dict(),
                    "caption": caption(attrs),
                    "sentences": sentences,
                    "num_frames": plan.num_frames,
                    "fps": float(fps),
                }
            )
            plan.json_videos.append(
                {
                    "category": int(rng.integers(0, 20)),
                    "url": f"https://www.youtube.com/watch?v={_random_id(rng)}",
                    "video_id": video_id,
                    "start time": 0.0,
                    "end time": round(plan.num_frames / float(fps), 3),
                    "split": split,
                    "id": number,
                }
            )
            for text in sentences:
                plan.json_sentences.append(
                    {"caption": text, "video_id": video_id, "sen_id": len(plan.json_sentences)}
                )
    return plan


def _write_downstream_files(root: Path, plan: _DownstreamPlan) -> dict[str, Any]:
    """The MSR-VTT annotation files; returns the downstream part of truth.json."""
    data = {"videos": plan.json_videos, "sentences": plan.json_sentences}
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    train = [r["video_id"] for r in plan.records if r["split"] == "train"]
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in train))
    for name, split in (("MSRVTT_JSFUSION_test.csv", "test"), ("MSRVTT_val.csv", "validate")):
        lines = ["key,vid_key,video_id,sentence\n"]
        for r in plan.records:
            if r["split"] == split:
                number = r["video_id"].removeprefix("video")
                lines.append(f"ret{number},msr{number},{r['video_id']},{r['sentences'][0]}\n")
        (root / name).write_text("".join(lines))
    return {
        "videos": plan.records,
        "files": {
            "data_json": "downstream/MSRVTT_data.json",
            "train_csv": "downstream/MSRVTT_train.9k.csv",
            "val_csv": "downstream/MSRVTT_val.csv",
            "test_csv": "downstream/MSRVTT_JSFUSION_test.csv",
            "videos": "downstream/videos",
        },
    }


# ---- encoding jobs (one file group each; independent, so they can run in parallel) -------------------


def _write_full_video(out: Path, cfg: CorpusConfig, plan: VideoPlan) -> int:
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


def _write_downstream_video(path: Path, cfg: CorpusConfig, scene: Scene, num_frames: int) -> int:
    renderer = SceneRenderer(scene, cfg.height, cfg.width, band_top(cfg.height))
    frames = (renderer.render(i / (num_frames - 1)) for i in range(num_frames))
    fps = cfg.fps_fraction
    return encode_video(path, _stamped(frames, 0), range(num_frames), 1 / fps, cfg, rate=fps)


def _run_jobs(jobs: list[tuple[str, Callable[..., int], tuple[Any, ...]]], workers: int) -> None:
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


# ---- entry points ----------------------------------------------------------------------------------


def _prepare_out(out: Path, overwrite: bool) -> None:
    existing = [name for name in _OUTPUTS if (out / name).exists()]
    # Without truth.json (written last) the outputs are an interrupted run's: the corpus is a pure
    # function of its config, so the rerun replaces them, which is how it resumes.
    if existing and not overwrite and (out / "truth.json").exists():
        raise FileExistsError(f"{out} already holds a corpus ({', '.join(existing)}); pass overwrite=True")
    for name in existing:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(
    out: Path,
    videos: int = CorpusConfig.videos,
    clips_per_video: int = CorpusConfig.clips_per_video,
    seed: int = CorpusConfig.seed,
    *,
    overwrite: bool = False,
    workers: int = 1,
    **options: Any,
) -> CorpusManifest:
    """Write a corpus under `out`; `options` are any other `CorpusConfig` fields (width, fps, gop, ...)."""
    cfg = CorpusConfig(videos=videos, clips_per_video=clips_per_video, seed=seed, **options)
    return generate_from_config(Path(out), cfg, overwrite=overwrite, workers=workers)


def generate_from_config(
    out: Path, cfg: CorpusConfig, *, overwrite: bool = False, workers: int = 1
) -> CorpusManifest:
    """Write the corpus of `cfg` under `out`; `workers` processes encode files in parallel (same bytes)."""
    cfg.validate()
    _prepare_out(out, overwrite)
    for name in ("meta", "videos", "clips", "downstream/videos"):
        (out / name).mkdir(parents=True)
    started = time.monotonic()
    video_ids = _video_ids(cfg.seed, cfg.videos)
    plans = [_plan_video(cfg, k, vid) for k, vid in enumerate(video_ids)]
    downstream = _plan_downstream(cfg)
    jobs: list[tuple[str, Callable[..., int], tuple[Any, ...]]] = [
        (f"video {p.video_id}", _write_full_video, (out, cfg, p)) for p in plans
    ]
    for record, scene in zip(downstream.records, downstream.scenes, strict=True):
        path = out / "downstream" / "videos" / f"{record['video_id']}.mp4"
        jobs.append(
            (
                f"downstream {record['video_id']}",
                _write_downstream_video,
                (path, cfg, scene, downstream.num_frames),
            )
        )
    _run_jobs(jobs, workers)

    with (out / "meta" / "part0.jsonl").open("w") as fh:
        for plan in plans:
            line = {
                "video_id": plan.video_id,
                "url": f"https://www.youtube.com/watch?v={plan.video_id}",
                "clip": [
                    {"clip_id": c.clip_id, "span": [format_timestamp(ms) for ms in c.span_ms]}
                    for c in plan.clips
                ],
            }
            fh.write(json.dumps(line) + "\n")
    with (out / "subtitles.jsonl").open("w") as fh:
        for plan in plans:
            for clip in plan.clips:
                fh.write(json.dumps({"clip_id": clip.clip_id, "text": clip.subtitle}) + "\n")
    downstream_truth = _write_downstream_files(out / "downstream", downstream)
    downstream_ids = [r["video_id"] for r in downstream.records]
    truth = {
        "format": "clipvip-synthetic-corpus/1",
        "config": asdict(cfg),
        "T": cfg.sampled_frames,
        "videos": [_video_truth(cfg, p) for p in plans],
        "clips": [_clip_truth(cfg, p, c) for p in plans for c in p.clips],
        "downstream": downstream_truth,
    }
    write_text_atomic(out / "truth.json", json.dumps(truth, indent=1))  # last: marks a complete corpus
    log.info("corpus of %d videos written to %s in %.1fs", cfg.videos, out, time.monotonic() - started)
    return _manifest(out, cfg, video_ids, [c.clip_id for p in plans for c in p.clips], downstream_ids)


def _manifest(
    out: Path,
    cfg: CorpusConfig,
    video_ids: Sequence[str],
    clip_ids: Sequence[str],
    downstream_ids: Sequence[str],
) -> CorpusManifest:
    return CorpusManifest(
        root=out,
        metadata=out / "meta" / "part0.jsonl",
        videos=out / "videos",
        clips=out / "clips",
        subtitles=out / "subtitles.jsonl",
        truth=out / "truth.json",
        downstream=out / "downstream",
        video_ids=tuple(video_ids),
        clip_ids=tuple(clip_ids),
        downstream_ids=tuple(downstream_ids),
        config=cfg,
    )


def load_manifest(root: Path) -> CorpusManifest:
    """Manifest of a corpus generated earlier (reads truth.json; fails if generation did not finish)."""
    root = Path(root)
    truth = json.loads((root / "truth.json").read_text())
    raw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in truth["config"].items()}
    cfg = CorpusConfig(**raw)
    return _manifest(
        root,
        cfg,
        [v["video_id"] for v in truth["videos"]],
        [c["clip_id"] for c in truth["clips"]],
        [v["video_id"] for v in truth["downstream"]["videos"]],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: exit status 0 written, 2 a user error (one line), 130 interrupted."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    d = CorpusConfig()
    p = argparse.ArgumentParser(prog="python -m synthetic.corpus", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--videos", type=int, default=d.videos)
    p.add_argument("--clips-per-video", type=int, default=d.clips_per_video)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--gop", type=int, default=d.gop)
    p.add_argument("--bframes", type=int, default=d.bframes)
    p.add_argument("--crf", type=int, default=d.crf)
    p.add_argument("--clip-seconds", type=float, nargs=2, default=d.clip_seconds, metavar=("MIN", "MAX"))
    p.add_argument("--gap-seconds", type=float, nargs=2, default=d.gap_seconds, metavar=("MIN", "MAX"))
    p.add_argument(
        "--downstream", type=int, nargs=3, default=d.downstream_videos, metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument("--downstream-seconds", type=float, default=d.downstream_seconds)
    p.add_argument("--downstream-sentences", type=int, default=d.downstream_sentences)
    p.add_argument("--rotated-videos", type=int, default=d.rotated_videos)
    p.add_argument("--vfr-videos", type=int, default=d.vfr_videos)
    p.add_argument("--audio-videos", type=int, default=d.audio_videos)
    p.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    p.add_argument("--workers", type=int, default=1, help="encoding processes (output is identical)")
    p.add_argument(
        "--pathologies",
        action="store_true",
        help="instead: write the decoding-pathology corpus to OUT/pathologies and check this build's "
        "decoders on it (exit 1 on any wrong frame)",
    )
    args = show_defaults(p).parse_args(argv)
    output_dir(args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.pathologies:
        return _pathologies_main(args.out / "pathologies")
    try:
        manifest = generate(
            args.out,
            args.videos,
            args.clips_per_video,
            args.seed,
            overwrite=args.overwrite,
            workers=args.workers,
            width=args.width,
            height=args.height,
            fps=args.fps,
            gop=args.gop,
            bframes=args.bframes,
            crf=args.crf,
            clip_seconds=tuple(args.clip_seconds),
            gap_seconds=tuple(args.gap_seconds),
            downstream_videos=tuple(args.downstream),
            downstream_seconds=args.downstream_seconds,
            downstream_sentences=args.downstream_sentences,
            rotated_videos=args.rotated_videos,
            vfr_videos=args.vfr_videos,
            audio_videos=args.audio_videos,
        )
    except (ValueError, FileExistsError) as exc:
        raise UserError(str(exc)) from None
    print(json.dumps({k: str(v) for k, v in asdict(manifest).items() if isinstance(v, Path)}, indent=1))
    return 0


def _pathologies_main(out: Path) -> int:
    """Write synthetic.pathologies into `out` and report, per decoder, every clip stored with a wrong frame."""
    truth = write_pathologies(out)
    report: dict[str, Any] = {"out": str(out), "files": sorted(truth)}
    for decoder in ("pyav", "decord"):
        report[decoder] = check_pathologies(out, decoder)
    print(json.dumps(report, indent=1))
    return 1 if report["pyav"] or report["decord"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
