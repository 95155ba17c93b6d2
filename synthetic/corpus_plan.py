"""Planning the synthetic corpus: the generator's config, and per video the frame times and the clips
(spans chosen so that the right frames of CONTRACTS §2 never depend on float rounding)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from synthetic.content import Scene, draw_attributes, random_scene, subtitle

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VFR_TIME_BASE = Fraction(1, 90000)
# Frame durations of a VFR video, in 1/90000 s ticks (26.7, 33.3, 41.7, 50 ms): jittery phone-like timing.
_VFR_DURATIONS = (2400, 3000, 3000, 3000, 3750, 4500)
# A span bound closer than this to a frame time, or a middle point with a runner-up frame closer
# than this, would make the truth depend on float rounding; the planner never produces one.
_MARGIN = Fraction(1, 1000)
_MIN_EDGE_FRAMES = 6
# Random-stream domains, so changing one part of the config does not reshuffle the others.
RNG_IDS, RNG_VIDEO, RNG_DOWNSTREAM = 1, 2, 3


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


def rng_for(seed: int, domain: int, index: int = 0) -> np.random.Generator:
    """The random stream of one part of the corpus (domain: RNG_*; index: e.g. the video number)."""
    return np.random.default_rng([seed, domain, index])


def random_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id."""
    return "".join(_ID_ALPHABET[int(k)] for k in rng.integers(0, len(_ID_ALPHABET), 11))


def plan_video_ids(seed: int, count: int) -> list[str]:
    """`count` distinct 11-character video ids, by seed."""
    rng = rng_for(seed, RNG_IDS)
    ids: list[str] = []
    while len(ids) < count:
        vid = random_id(rng)
        if vid not in ids:
            ids.append(vid)
    return ids


def frames_in(times: Sequence[Fraction], start: Fraction, end: Fraction) -> list[int]:
    """Indices of the frames with t in [start, end) -- the `full`-layout rule of CONTRACTS §2."""
    return [i for i, t in enumerate(times) if start <= t < end]


def nearest(times: Sequence[Fraction], target: Fraction) -> tuple[int, Fraction]:
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
    if frames_in(times, start, stop) != list(range(first, end)):
        return None
    _, gap = nearest(times, (start + stop) / 2)
    return (start_ms, end_ms) if gap > _MARGIN else None


def plan_video(cfg: CorpusConfig, index: int, video_id: str) -> VideoPlan:
    """Frame times, clips (spans, scenes, subtitles) and idle scene of video number `index`."""
    rng = rng_for(cfg.seed, RNG_VIDEO, index)
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
