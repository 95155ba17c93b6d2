"""What the synthetic corpus shows and says: a coloured shape moving on a noisy background, plus texts.

Every clip (and every downstream video) is one `Scene`: a big saturated shape of one of 6 colours x
4 shapes moving in one of 4 directions. The same attributes are rendered as three text domains:
- `caption`: the descriptive truth, as an image captioner would phrase it ("a red circle moving to
  the left");
- `subtitle`: ASR-like speech that names the content only loosely (fillers, no punctuation, colour
  sometimes, informal shape words, sometimes nothing related at all);
- `query_sentence`: MSR-VTT-style retrieval sentences ("a red circle moves left across the screen").
Shapes are at least 30% of the frame height and colours are far apart in hue, so the attributes stay
unambiguous after a squash to 32x32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 25),
    "green": (25, 175, 45),
    "blue": (30, 70, 235),
    "yellow": (245, 220, 10),
    "orange": (255, 135, 0),
    "purple": (145, 35, 195),
}
SHAPES = ("circle", "square", "triangle", "cross")
MOTIONS = ("left", "right", "up", "down")
_DIRECTION = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class Attributes:
    colour: str
    shape: str
    motion: str

    def as_dict(self) -> dict[str, str]:
        return {"colour": self.colour, "shape": self.shape, "motion": self.motion}


def all_attributes() -> list[Attributes]:
    """Every combination, in a fixed order (6 x 4 x 4 = 96)."""
    return [Attributes(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]


def draw_attributes(rng: np.random.Generator, count: int) -> list[Attributes]:
    """``count`` attribute sets, distinct while ``count`` <= 96 (so retrieval targets are unique)."""
    combos = all_attributes()
    picks: list[Attributes] = []
    while len(picks) < count:
        order = rng.permutation(len(combos))
        picks += [combos[int(k)] for k in order[: count - len(picks)]]
    return picks


@dataclass(frozen=True)
class Scene:
    """One shape's motion over ``[0, 1]`` of its segment, drawn into the content area of a frame."""

    attributes: Attributes
    background: int  # grey level of the background
    size: float  # shape radius as a fraction of the content-area height
    cross_offset: float  # position across the motion axis, -1..1 of the free range
    noise_seed: int


def random_scene(rng: np.random.Generator, attributes: Attributes) -> Scene:
    return Scene(
        attributes=attributes,
        background=int(rng.integers(95, 150)),
        size=float(rng.uniform(0.17, 0.22)),
        cross_offset=float(rng.uniform(-0.6, 0.6)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def background(height: int, width: int, grey: int, noise_seed: int) -> np.ndarray:
    """Static noisy grey background (HxWx3 uint8): texture without colour, so it never names a colour."""
    noise = np.random.default_rng(noise_seed).normal(0.0, 10.0, (height, width, 1))
    return np.clip(grey + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)


def shape_mask(shape: str, radius: int) -> np.ndarray:
    """Boolean (2r+1)x(2r+1) mask of ``shape`` centred in the square."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    r = float(radius)
    if shape == "circle":
        return xx**2 + yy**2 <= r**2
    if shape == "square":
        side = 0.85 * r  # same visual area as the circle, roughly
        return (np.abs(xx) <= side) & (np.abs(yy) <= side)
    if shape == "triangle":
        # Upright isosceles triangle: apex at the top, base at the bottom of the box.
        return (yy <= r) & (np.abs(xx) <= (yy + r) / 2.0)
    if shape == "cross":
        arm = 0.33 * r
        return ((np.abs(xx) <= arm) | (np.abs(yy) <= arm)) & (np.abs(xx) <= r) & (np.abs(yy) <= r)
    raise ValueError(f"unknown shape {shape!r}")


class SceneRenderer:
    """Draws a scene at progress ``p`` in ``[0, 1]`` into the top ``content_height`` rows of a frame."""

    def __init__(self, scene: Scene, height: int, width: int, content_height: int) -> None:
        self.scene = scene
        self.content_height = content_height
        self.base = background(height, width, scene.background, scene.noise_seed)
        self.radius = max(3, round(scene.size * content_height))
        self.mask = shape_mask(scene.attributes.shape, self.radius)
        self.colour = np.array(COLOURS[scene.attributes.colour], np.uint8)
        self.width = width

    def center(self, progress: float) -> tuple[int, int]:
        """Shape centre (x, y): travels from 20% to 80% of the free range along its direction."""
        r = self.radius
        free_x = (r, self.width - 1 - r)
        free_y = (r, self.content_height - 1 - r)
        dx, dy = _DIRECTION[self.scene.attributes.motion]
        along = 0.2 + 0.6 * progress
        across = 0.5 + 0.5 * self.scene.cross_offset

        def pos(free: tuple[int, int], d: int) -> float:
            frac = (along if d > 0 else 1.0 - along) if d else across
            return free[0] + frac * (free[1] - free[0])

        return round(pos(free_x, dx)), round(pos(free_y, dy))

    def render(self, progress: float) -> np.ndarray:
        frame = self.base.copy()
        cx, cy = self.center(progress)
        r = self.radius
        region = frame[cy - r : cy + r + 1, cx - r : cx + r + 1]
        region[self.mask] = self.colour
        return frame


# ---- text domains ---------------------------------------------------------------------------------

_CAPTION_MOTION = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}


def caption(a: Attributes) -> str:
    """Descriptive truth, in the style of an image captioner."""
    return f"a {a.colour} {a.shape} moving {_CAPTION_MOTION[a.motion]}"


_QUERY_SHAPE = {
    "circle": ("circle", "circle", "ball", "round disc"),
    "square": ("square", "square", "box", "block"),
    "triangle": ("triangle", "triangle", "triangle shape"),
    "cross": ("cross", "cross", "plus sign"),
}
_QUERY_MOTION = {
    "left": ("left", "to the left", "leftward"),
    "right": ("right", "to the right", "rightward"),
    "up": ("up", "upward", "towards the top"),
    "down": ("down", "downward", "towards the bottom"),
}
_QUERY_TEMPLATES = (
    "a {c} {s} moves {m} across the screen",
    "a {c} {s} is moving {m}",
    "{c} {s} sliding {m} on a grey background",
    "a video of a {c} {s} going {m}",
    "the {c} {s} travels {m}",
    "someone shows a {c} {s} that moves {m}",
    "an animation of a {c} {s} drifting {m}",
    "a {c} {s} slowly goes {m}",
)


def query_sentence(rng: np.random.Generator, a: Attributes) -> str:
    """One MSR-VTT-style sentence; always names colour, shape (maybe a synonym) and direction."""
    template = _QUERY_TEMPLATES[int(rng.integers(len(_QUERY_TEMPLATES)))]
    shape_words = _QUERY_SHAPE[a.shape]
    motion_words = _QUERY_MOTION[a.motion]
    return template.format(
        c=a.colour,
        s=shape_words[int(rng.integers(len(shape_words)))],
        m=motion_words[int(rng.integers(len(motion_words)))],
    )


def query_sentences(rng: np.random.Generator, a: Attributes, count: int) -> list[str]:
    """``count`` sentences, distinct where the template space allows."""
    out: list[str] = []
    for _ in range(count * 10):
        s = query_sentence(rng, a)
        if s not in out:
            out.append(s)
        if len(out) == count:
            break
    while len(out) < count:
        out.append(query_sentence(rng, a))
    return out


_OPENERS = ("so", "okay so", "um", "alright", "and now", "right so", "uh", "now")
_FILLERS = ("you know", "like", "uh", "i mean", "basically", "um", "kind of", "actually")
_ASR_SHAPE = {
    "circle": ("round thing", "ball", "circle", "dot"),
    "square": ("box", "block", "square thing"),
    "triangle": ("triangle", "pointy one", "triangle thing"),
    "cross": ("plus", "cross thing", "x shape"),
}
_ASR_MOTION = {
    "left": ("over this way", "to the side", "back over here"),
    "right": ("over that way", "to the other side", "across there"),
    "up": ("up there", "up to the top", "going up"),
    "down": ("down there", "to the bottom", "going down"),
}
_UNRELATED = (
    "dont forget to like and subscribe",
    "welcome back to the channel everybody",
    "let me know in the comments what you think",
    "thats gonna be it for today",
    "we will talk about that a bit later",
    "i got this at the store last week",
    "thanks for watching see you next time",
    "this part is really important for the next step",
)


def subtitle(rng: np.random.Generator, a: Attributes) -> str:
    """ASR-like speech: lower case, no punctuation, fillers; names the content only loosely."""
    if rng.random() < 0.15:
        return str(_UNRELATED[int(rng.integers(len(_UNRELATED)))])
    words: list[str] = [str(_OPENERS[int(rng.integers(len(_OPENERS)))])]
    if rng.random() < 0.5:
        colour = a.colour
        if rng.random() < 0.1:  # ASR / speaker slip: another colour
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        words.append(f"this one is {colour}")
    if rng.random() < 0.4:
        options = _ASR_SHAPE[a.shape]
        words.append(f"look at the {options[int(rng.integers(len(options)))]}")
    if rng.random() < 0.4:
        words.append(str(_FILLERS[int(rng.integers(len(_FILLERS)))]))
    if rng.random() < 0.15:
        options = _ASR_MOTION[a.motion]
        words.append(f"it goes {options[int(rng.integers(len(options)))]}")
    if len(words) == 1:
        words.append("see how it moves")
    if rng.random() < 0.3:
        words.append(str(_UNRELATED[int(rng.integers(len(_UNRELATED)))]))
    return " ".join(words)
