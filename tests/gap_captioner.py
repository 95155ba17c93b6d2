"""A deterministic image-dependent test captioner for the comparison tests ("gap_captioner:load").

It names the dominant hue of the frame's saturated pixels, so different clips of the synthetic corpus
(coloured shapes) get different, meaningful captions without any model. Not a registered backend:
the caption job loads it by its "module:factory" path with tests/ on PYTHONPATH.
"""

from __future__ import annotations

import numpy as np

HUES = (
    (0, "red"),
    (30, "orange"),
    (60, "yellow"),
    (120, "green"),
    (180, "cyan"),
    (240, "blue"),
    (285, "purple"),
    (330, "pink"),
)


def _hue_name(img: np.ndarray) -> str:
    x = img.reshape(-1, 3).astype(np.float32) / 255.0
    mx, mn = x.max(1), x.min(1)
    sat = x[(mx - mn) > 0.35]
    if len(sat) == 0:
        return "grey"
    r, g, b = sat.mean(0)
    hue = float(np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b))) % 360
    return min(HUES, key=lambda h: min(abs(hue - h[0]), 360 - abs(hue - h[0])))[1]


class ColourCaptioner:
    id = "colour-test-captioner(rule-based)"

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return [f"a {_hue_name(im)} shape moving on a plain background" for im in images]


def load(**options: object) -> ColourCaptioner:
    return ColourCaptioner()
