"""The batch the training loop consumes, from pretraining shards or a retrieval training set."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class Batch:
    video: torch.Tensor  # [B, T, 3, H, W]
    text_ids: torch.Tensor  # [B, L]
    text_mask: torch.Tensor
    image: torch.Tensor | None  # [B, 1, 3, H, W] middle frame (for L_F<->C)
    cap_ids: torch.Tensor | None
    cap_mask: torch.Tensor | None
    keys: list[str]
    cap_valid: torch.Tensor | None = None  # bool [B]: the sample has a caption
    stream: int = -1  # logical stream that produced the batch (resume bookkeeping)
    stream_pos: int = -1  # that stream's draw count after this batch
    counts: dict[str, int] = field(
        default_factory=dict
    )  # trainer.data.shards.COUNTERS since the stream's previous batch

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        def mv(x: Any) -> Any:
            return x.to(device, non_blocking=non_blocking) if isinstance(x, torch.Tensor) else x

        return Batch(**{f.name: mv(getattr(self, f.name)) for f in fields(self)})

    def pin_memory(self) -> Batch:
        def pin(x: Any) -> Any:
            return x.pin_memory() if isinstance(x, torch.Tensor) else x

        return Batch(**{f.name: pin(getattr(self, f.name)) for f in fields(self)})

    def __len__(self) -> int:
        return len(self.keys)
