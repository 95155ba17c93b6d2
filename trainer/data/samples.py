"""One shard sample's bytes -> the tensors and texts of a training draw, and the per-worker decode cache.

Frames: from ``K.mp4`` when present (``frame_source: auto``), with CLIP-ViP's endpoint jitter
(``interval = int(n/(T-1))``, ``start ~ U{0..interval}``, ``end ~ U{n-1-interval..n-1}``, ``linspace``),
else the pre-sampled ``K.fNN.jpg`` (``floor(linspace)`` over them when T differs). Squash to the model's
image size, CLIP normalisation, no augmentation (the CLIP-ViP paper and official code). Every frame of a
clip is decoded (the sampling rule needs the count, a frame needs the ones before it); only the sampled
ones are converted to RGB.

Decode cache (``data.decode_cache_mb`` > 0, off by default): a stream (one per worker) keeps, up to that
size, what every draw of a sample shares (``DecodedSample``: every frame of its clip squashed to the image
size, or the fixed frames when nothing is random, the preprocessed middle frame, the texts; a corrupt
sample's reason), keyed by (tar, sample key, decode options). A redraw only samples positions and
normalises them: the tensors are identical to a fresh decode with the same RNG. It pays off when each clip
is drawn many times (small sets, the demo); a cached clip of n frames costs about ``n * S * S * 3`` bytes.
"""

from __future__ import annotations

import io
import os
import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from PIL import Image

from pipeline.shard_format import CAPTION, MIDDLE, SUBTITLE, VIDEO, frame_exts
from trainer.data.frames import jittered_indices, normalize, preprocess, squash, uniform_indices


class CorruptSample(ValueError):
    pass


@dataclass
class DecodeOptions:
    num_frames: int
    image_size: int
    frame_source: str  # auto | jpg | mp4
    jitter: bool
    need_image: bool
    need_caption: bool


def _jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# One reformatter per process: `VideoFrame.to_ndarray(format=...)` builds a new swscale context for
# every frame (most of the conversion's cost); this one keeps it. Same scaler, same pixels. Keyed by
# pid: a context inherited through fork (DataLoader workers) can hang on its parent's threads.
_RGB: dict[int, VideoReformatter] = {}


def _reformatter() -> VideoReformatter:
    return _RGB.setdefault(os.getpid(), VideoReformatter())


def _mp4_decoded(data: bytes) -> tuple[Any, list[Any]]:
    """(open container, every decoded frame): the sampling rule needs the count and a frame needs the
    ones before it. The caller closes the container."""
    c = av.open(io.BytesIO(data), mode="r")
    try:
        if not c.streams.video:
            raise CorruptSample("mp4 has no video stream")
        frames = list(c.decode(c.streams.video[0]))
        if not frames:
            raise CorruptSample("mp4 decodes to no frame")
    except BaseException:
        c.close()
        raise
    return c, frames


def _rgb(frame: Any) -> np.ndarray:
    return _reformatter().reformat(frame, format="rgb24").to_ndarray()


def _mp4_frames(data: bytes, num_frames: int, rng: random.Random | None) -> np.ndarray:
    """The clip's sampled frames as RGB. Every frame is decoded, only the sampled ones are converted."""
    c, frames = _mp4_decoded(data)
    with c:
        idx = (
            jittered_indices(len(frames), num_frames, rng)
            if rng is not None
            else uniform_indices(len(frames), num_frames)
        )
        rgb = {i: _rgb(frames[i]) for i in set(idx)}
    return np.stack([rgb[i] for i in idx])


def _mp4_all_frames(data: bytes) -> np.ndarray:
    """Every frame of the clip as RGB (what a jittered draw may pick)."""
    c, frames = _mp4_decoded(data)
    with c:
        return np.stack([_rgb(f) for f in frames])


def _text(raw: dict[str, bytes], ext: str) -> str | None:
    if ext not in raw:
        return None
    try:
        return raw[ext].decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise CorruptSample(f"{ext}: not UTF-8") from e


def needed_members(exts: Iterable[str], opt: DecodeOptions) -> set[str]:
    """The members `decode_sample` will use: the stored frames only when no clip replaces them, the
    middle frame and the caption only when the loss needs them (the rest is never read)."""
    exts = set(exts)
    uses_video = VIDEO in exts and opt.frame_source in ("auto", "mp4")
    wanted = {SUBTITLE} | ({VIDEO} if uses_video else set(frame_exts(exts)))
    return wanted | ({MIDDLE} if opt.need_image else set()) | ({CAPTION} if opt.need_caption else set())


def _uses_mp4(raw: dict[str, bytes], opt: DecodeOptions) -> bool:
    if opt.frame_source == "mp4" and VIDEO not in raw:
        raise CorruptSample(f"no {VIDEO} (data.frame_source is 'mp4')")
    if VIDEO in raw and opt.frame_source in ("auto", "mp4"):
        return True
    if not frame_exts(raw):
        raise CorruptSample(f"no frames (no sampled frame jpgs and no {VIDEO})")
    return False


def _jpg_frames(raw: dict[str, bytes], num_frames: int) -> np.ndarray:
    """The stored frames at ``floor(linspace)`` over them; each distinct one decoded once."""
    frame_keys = frame_exts(raw)
    picks = uniform_indices(len(frame_keys), num_frames)
    decoded = {k: _jpeg(raw[k]) for k in {frame_keys[i] for i in picks}}
    return np.stack([decoded[frame_keys[i]] for i in picks])


def _image_and_texts(
    raw: dict[str, bytes], opt: DecodeOptions
) -> tuple[torch.Tensor | None, str, str | None]:
    image = None
    if opt.need_image:
        if MIDDLE not in raw:
            raise CorruptSample(f"no {MIDDLE}")
        image = preprocess(_jpeg(raw[MIDDLE])[None], opt.image_size)
    subtitle = _text(raw, SUBTITLE)
    if subtitle is None:
        raise CorruptSample(f"no {SUBTITLE}")
    caption = _text(raw, CAPTION) if opt.need_caption else None
    return image, subtitle, caption or None  # empty caption == not captioned


def decode_sample(raw: dict[str, bytes], opt: DecodeOptions, rng: random.Random) -> dict[str, Any]:
    """-> video [T,3,S,S], image [1,3,S,S] | None, subtitle str, caption str | None. Raises CorruptSample."""
    try:
        if _uses_mp4(raw, opt):
            frames = _mp4_frames(raw[VIDEO], opt.num_frames, rng if opt.jitter else None)
        else:
            frames = _jpg_frames(raw, opt.num_frames)
        image, subtitle, caption = _image_and_texts(raw, opt)
        return {
            "video": preprocess(frames, opt.image_size),
            "image": image,
            "subtitle": subtitle,
            "caption": caption,
        }
    except CorruptSample:
        raise
    except Exception as e:  # PIL / PyAV raise many types on corrupt bytes
        raise CorruptSample(f"{type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------------------- decode cache


@dataclass
class DecodedSample:
    """What every draw of one sample shares. ``frames``: uint8 ``[n,S,S,3]`` already squashed; with
    ``jitter`` every frame of the clip (a draw picks CLIP-ViP's jittered positions), else the draw's
    frames themselves (nothing random). ``image``: the preprocessed middle frame."""

    frames: np.ndarray
    jitter: bool
    image: torch.Tensor | None
    subtitle: str
    caption: str | None

    def nbytes(self) -> int:
        image = 0 if self.image is None else self.image.nelement() * self.image.element_size()
        texts = len(self.subtitle) + len(self.caption or "") + 200  # 200: the key and the objects
        return self.frames.nbytes + image + texts


def decode_whole(raw: dict[str, bytes], opt: DecodeOptions) -> DecodedSample:
    """The cacheable part of ``decode_sample``: the same checks, the same pixels. Raises CorruptSample."""
    try:
        if _uses_mp4(raw, opt):
            jitter = opt.jitter
            rgb = _mp4_all_frames(raw[VIDEO]) if jitter else _mp4_frames(raw[VIDEO], opt.num_frames, None)
        else:
            jitter, rgb = False, _jpg_frames(raw, opt.num_frames)
        image, subtitle, caption = _image_and_texts(raw, opt)
        return DecodedSample(squash(rgb, opt.image_size), jitter, image, subtitle, caption)
    except CorruptSample:
        raise
    except Exception as e:  # PIL / PyAV raise many types on corrupt bytes
        raise CorruptSample(f"{type(e).__name__}: {e}") from e


def draw_sample(d: DecodedSample, opt: DecodeOptions, rng: random.Random) -> dict[str, Any]:
    """``decode_sample``'s result from a cached decode: squash and normalisation act on each frame alone,
    so normalising the drawn subset of the squashed frames gives the same tensor."""
    frames = d.frames[jittered_indices(len(d.frames), opt.num_frames, rng)] if d.jitter else d.frames
    image = None if d.image is None else d.image.clone()
    return {"video": normalize(frames), "image": image, "subtitle": d.subtitle, "caption": d.caption}


class DecodeCache:
    """LRU of ``DecodedSample``s (a corrupt sample: its reason) up to ``max_bytes``; one per stream, so one
    per DataLoader worker."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used = max_bytes, 0
        self._items: OrderedDict[tuple, tuple[DecodedSample | str, int]] = OrderedDict()

    def get(self, key: tuple) -> DecodedSample | str | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key][0]

    def put(self, key: tuple, value: DecodedSample | str) -> None:
        size = value.nbytes() if isinstance(value, DecodedSample) else len(value) + 200
        if size > self.max_bytes or key in self._items:
            return
        while self.used + size > self.max_bytes:
            self.used -= self._items.popitem(last=False)[1][1]
        self._items[key] = (value, size)
        self.used += size
