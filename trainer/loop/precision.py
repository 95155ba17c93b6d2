"""Mixed precision: bf16 or fp16 autocast on CUDA (fp16 with a GradScaler), fp32 on CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str  # cuda | cpu
    scaler: torch.amp.GradScaler | None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.name == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """ "auto": bf16 on CUDA when supported, else fp16; fp32 on CPU. fp16 on CPU is refused (no scaler
    benefit, slow kernels); bf16 on CPU is allowed."""
    dev = device.type
    if name == "auto":
        if dev == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    if name not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {name!r}")
    if name == "fp16" and dev != "cuda":
        raise ValueError("fp16 needs CUDA; use fp32 or bf16 on CPU")
    scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None
    return Precision(name, dev, scaler)
