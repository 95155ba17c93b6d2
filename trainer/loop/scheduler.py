"""Learning-rate schedule of the official ``get_lr_sched``: linear warmup over ``int(warmup_ratio * total)``
steps from 0, then cosine (or linear) decay to 0 at ``total``; the LR never goes below ``min_lr`` (1e-8).

The LR is a pure function of the step, so the scheduler state is just its configuration; resuming sets the
step and nothing else can drift. Each optimizer group gets ``lr * group["lr_mul"]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass
class LRSchedule:
    base_lr: float
    total_steps: int
    warmup_steps: int
    kind: str = "cosine"  # cosine | linear | constant
    min_lr: float = 1e-8

    @classmethod
    def from_ratio(
        cls, base_lr: float, total_steps: int, warmup_ratio: float, kind: str = "cosine", min_lr: float = 1e-8
    ) -> LRSchedule:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        return cls(base_lr, total_steps, int(warmup_ratio * total_steps), kind, min_lr)

    def factor(self, step: int) -> float:
        """Multiplier of the base LR at ``step`` (0-based: the LR used by the update of step ``step``)."""
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def lr(self, step: int) -> float:
        return max(self.base_lr * self.factor(step), self.min_lr)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_mul", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)


def total_steps(epochs: float, dataset_size: int, global_batch: int) -> int:
    """``ceil(epochs * N / global batch)`` (the official fine-tuning and pretraining step counts)."""
    if dataset_size < 1 or global_batch < 1:
        raise ValueError(f"cannot derive steps from dataset_size={dataset_size}, global_batch={global_batch}")
    return max(1, math.ceil(epochs * dataset_size / global_batch))
