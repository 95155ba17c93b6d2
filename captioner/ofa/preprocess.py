"""Image preprocessing of OFA's caption task: RGB, bicubic resize to a square, normalise with mean = std = 0.5.

We resize with PIL (`captioner.images.squash`), not torch.nn.functional.interpolate: OFA applies torchvision's Resize to PIL images, which
calls PIL's `resize(BICUBIC)` (a separable filter that also anti-aliases when shrinking), so PIL reproduces
OFA's input exactly. `interpolate(mode="bicubic", antialias=True)` is close but not bit-identical, and the
caption model was trained on PIL's output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from captioner.images import check_image, squash

RESIZE_THREADS = min(8, os.cpu_count() or 1)


def normalize(batch_uint8: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] or [B, 3, H, W] uint8 -> float32 (x/255 - 0.5)/0.5 (channels first)."""
    x = batch_uint8
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    return (x.float() / 255.0 - 0.5) / 0.5


def preprocess(images: Sequence[np.ndarray], size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Validated, resized and normalised batch [B, 3, size, size] float32 on `device`.

    Resizing runs in a few threads (PIL releases the GIL while resampling) so a fast GPU is not left waiting;
    the uint8 batch moves to the device before it is normalised (4x less to transfer than float32).
    """
    checked = [check_image(im, i) for i, im in enumerate(images)]
    if len(checked) > 1:
        with ThreadPoolExecutor(max_workers=min(len(checked), RESIZE_THREADS)) as pool:
            resized = list(pool.map(lambda im: squash(im, size), checked))
    else:
        resized = [squash(im, size) for im in checked]
    return normalize(torch.from_numpy(np.stack(resized)).to(device))
