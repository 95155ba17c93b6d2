"""Which frames of a clip are wanted (CONTRACTS §2): pure functions over presentation times.

The one place that turns a clip's frame list into its middle frame, its T sampled frames and, with
`--store-video`, the frames shown at 3 fps. Frames are named by a key (a packet pts, or an output
position when times come from output order); times are exact rationals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


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


@dataclass(frozen=True)
class Selection:
    """The wanted frames of one clip, by frame key."""

    keys: tuple[int, ...]  # the clip's frames, presentation order
    middle: int
    sampled: tuple[int, ...]
    video: tuple[int, ...]  # --store-video frames (empty without it)
    times: dict[int, float]  # key -> seconds

    def wanted(self) -> set[int]:
        return {self.middle, *self.sampled, *self.video}

    def small(self) -> set[int]:
        """Frames stored at --frame-size: the middle one and the sampled ones."""
        return {self.middle, *self.sampled}


def select_frames(
    keys: Sequence[int],
    times: Sequence[Fraction],
    mid_target: Fraction | None,
    frames: int,
    video_fps: float | None,
    start: Fraction,
    end: Fraction,
) -> Selection:
    """Middle (nearest to mid_target, or position n // 2 without one), sampled and shown frames.

    `keys` and `times` are the clip's frames in presentation order; `video_fps` None: no video."""
    n = len(keys)
    mid = nearest_position(times, mid_target) if mid_target is not None else n // 2
    sampled = tuple(keys[i] for i in sampled_positions(n, frames))
    video = tuple(keys[i] for i in shown_positions(times, start, end, video_fps)) if video_fps else ()
    return Selection(tuple(keys), keys[mid], sampled, video, {k: float(t) for k, t in zip(keys, times)})
