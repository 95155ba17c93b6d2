"""A captioner that returns "" for every image: measures a job's overhead without any model."""

from __future__ import annotations

import numpy as np

from captioner.images import check_images


class NoopCaptioner:
    id = "noop"

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return [""] * len(check_images(images))  # same input contract as real captioners


def load_noop(batch_size: int | None = None, device: object = None, dtype: object = None) -> NoopCaptioner:
    """The options other captioners take are accepted and ignored, so a job can switch to "noop" unchanged."""
    return NoopCaptioner()
