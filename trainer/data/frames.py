"""Frames of a downstream video as model input: CLIP-ViP's frame sampling (uniform for evaluation,
jittered for training), exact decoding of the sampled positions, and CLIP preprocessing."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_MEAN = np.array(CLIP_MEAN, dtype=np.float32)
_STD = np.array(CLIP_STD, dtype=np.float32)

log = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    pass


def uniform_indices(n: int, num_frames: int) -> list[int]:
    """Evaluation sampling: ``floor(linspace(0, n-1, T))`` (frames repeat when n < T)."""
    if n <= 0:
        raise VideoDecodeError("video has no frames")
    return [int(x) for x in np.floor(np.linspace(0, n - 1, num_frames))]


def jittered_indices(n: int, num_frames: int, rng: random.Random) -> list[int]:
    """Training sampling of CLIP-ViP: random start in [0, interval], random end in [n-1-interval, n-1] with
    ``interval = int(n / (T-1))``, then ``int(linspace(start, end, T))``."""
    if n <= 0:
        raise VideoDecodeError("video has no frames")
    if num_frames < 2:
        return [rng.randint(0, n - 1)]
    interval = int(n / (num_frames - 1))
    start = rng.randint(0, min(interval, n - 1))
    end = rng.randint(max(n - 1 - interval, start), n - 1)
    return [int(x) for x in np.linspace(start, end, num_frames)]


def _frame_times(path: Path, span: tuple[float, float] | None) -> tuple[int, list[int] | None]:
    """Number of frames (packets carrying a picture) and, for a span, the positions inside it."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise VideoDecodeError("no video stream")
        s = c.streams.video[0]
        pts = [p.pts for p in c.demux(s) if p.size > 0 and p.pts is not None]
    if not pts:
        raise VideoDecodeError("no video packets")
    if span is None:
        return len(pts), None
    tb = float(s.time_base) if s.time_base else 1.0
    order = sorted(pts)  # presentation order; packets come in decode order when B-frames are on
    start = order[0]
    inside = [i for i, p in enumerate(order) if span[0] <= (p - start) * tb < span[1]]
    return len(order), inside


def decode_frames(
    path: Path,
    num_frames: int,
    *,
    span: tuple[float, float] | None = None,
    rng: random.Random | None = None,
) -> np.ndarray:
    """``num_frames`` RGB frames (uint8 ``[T,H,W,3]``, native size) of ``path`` (within ``span`` seconds).

    Uniform ``floor(linspace(0, n-1, T))`` positions, or CLIP-ViP's jittered training sampling when ``rng``
    is given. Decodes sequentially with PyAV (no seeking, so frame-exact with B-frames); the frame count comes
    from a cheap demux pass. If the decoder yields fewer frames than packets, positions are recomputed on
    the decoded count. Raises ``VideoDecodeError`` on any failure.
    """
    try:
        n, inside = _frame_times(Path(path), span)
        positions = list(range(n)) if inside is None else inside
        if not positions:
            raise VideoDecodeError(f"no frame inside span {span}")
        frames = _decode_positions(Path(path), positions, num_frames, rng)
    except VideoDecodeError:
        raise
    except Exception as e:  # PyAV raises many error types for corrupt files
        raise VideoDecodeError(f"{type(e).__name__}: {e}") from e
    return np.stack(frames)


def _decode_positions(path: Path, positions: list[int], num_frames: int, rng: random.Random | None) -> list:
    pick = (lambda m: jittered_indices(m, num_frames, rng)) if rng is not None else (
        lambda m: uniform_indices(m, num_frames))  # fmt: skip
    wanted_local = pick(len(positions))
    wanted = [positions[i] for i in wanted_local]
    need = set(wanted)
    got: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, frame in enumerate(c.decode(s)):
            decoded = i + 1
            if i in need:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= max(need):
                break
    if len(got) < len(need):
        if decoded == 0:
            raise VideoDecodeError("decoder produced no frame")
        # Fewer decoded frames than packets (e.g. a truncated file): resample on what decodes.
        log.warning("%s: %d packets but only %d frames decode; resampling", path, max(positions) + 1, decoded)
        kept = [p for p in positions if p < decoded]
        if not kept:
            raise VideoDecodeError("no decodable frame in range")
        return _decode_positions(path, kept, num_frames, rng)
    return [got[i] for i in wanted]


def squash(frames: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 ``[T,H,W,3]`` -> uint8 ``[T,S,S,3]``: squash-resize (bicubic, aspect not kept, as CLIP-ViP)."""
    out = np.empty((len(frames), image_size, image_size, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        img = Image.fromarray(f)
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        out[i] = np.asarray(img)
    return out


def normalize(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T,S,S,3]`` -> float ``[T,3,S,S]``: scale to [0,1], CLIP mean/std normalisation."""
    # numpy, not torch: tiny torch ops pay intra-op thread start-up, which dominates in loader workers.
    x = (frames.astype(np.float32) / 255.0 - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def preprocess(frames: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 ``[T,H,W,3]`` -> float ``[T,3,S,S]``: ``squash`` then ``normalize`` (each frame on its own, so
    squashing a clip's frames once and normalising any subset later gives the same tensor)."""
    return normalize(squash(frames, image_size))


def load_clip(
    path: Path, num_frames: int, image_size: int, *, span=None, rng: random.Random | None = None
) -> torch.Tensor:
    """Decode + preprocess: ``[T,3,S,S]`` float tensor ready for ``model.encode_video``."""
    return preprocess(decode_frames(path, num_frames, span=span, rng=rng), image_size)
