"""Input contract shared by every captioner: a list of H x W x 3 uint8 RGB numpy arrays; and `squash`, the
square resize with which a captioner that states an input size N (captioner.input_size) starts its own
preprocessing, so that a job may apply it early (squash(x, N) gives the same captions as x)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image


def check_image(image: object, index: int = 0) -> np.ndarray:
    """Validate one H x W x 3 uint8 RGB array; a clear ValueError names the offending item."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image {index}: expected H x W x 3 uint8 RGB, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image {index}: empty image of shape {image.shape}")
    return image


def check_images(images: object) -> list[np.ndarray]:
    """Validate a whole batch before any work starts, so a bad item never wastes the others' compute."""
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"expected a list of images, got {type(images).__name__}")
    return [check_image(im, i) for i, im in enumerate(images)]


def squash(image: np.ndarray, size: int) -> np.ndarray:
    """Bicubic (PIL) resize of an H x W x 3 uint8 image to size x size, aspect ratio not kept; the identity at
    that size (PIL returns a copy), so squashing twice equals squashing once."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    pil = Image.fromarray(np.ascontiguousarray(image))  # H x W x 3 uint8 is RGB
    return np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC))


def caption_in_batches(
    images: object, batch_size: int, caption_batch: Callable[[list[np.ndarray]], list[str]]
) -> list[str]:
    """Validate every image first, then caption them `batch_size` at a time, in order."""
    checked = check_images(images)
    out: list[str] = []
    for i in range(0, len(checked), batch_size):
        out.extend(caption_batch(checked[i : i + batch_size]))
    return out
