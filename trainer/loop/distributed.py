"""Process-group setup and feature gathering for the global-batch contrastive loss.

CLIP-ViP gathers every feature set over all ranks and computes the loss on the full global batch on every
rank (CLIPVIP.md §3, "Gathering"). ``gather_features`` does the same with DDP: the forward is an
all_gather; the backward hands each rank the gradient of its OWN slice only (no cross-rank communication),
multiplied by the world size. Every rank computes the same global loss L, so rank r's parameter gradient is
``W * dL/dx_r * dx_r/dtheta``; DDP then averages over ranks, which gives exactly ``dL/dtheta``: the gradient
of the single-process full-batch loss (tested against one process in tests/test_train_distributed.py).
Without the factor W, DDP's average would leave ``dL/dtheta / W``, which matters for grad-norm clipping.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Initialise from torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), or run single.

    ``device``: "auto" (CUDA when available), "cuda" or "cpu". nccl on CUDA, gloo on CPU.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size == 1:
        return DistInfo(0, 1, 0, dev, None)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if use_cuda else None,
        )
    return DistInfo(rank, world_size, local_rank, dev, backend)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _gather_padded(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """All ranks' ``x`` (local batch sizes may differ: a loader may drop a corrupt item) and the sizes."""
    ws = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes_t = [torch.empty_like(n) for _ in range(ws)]
    dist.all_gather(sizes_t, n)
    sizes = [int(t.item()) for t in sizes_t]
    pad = max(sizes) - x.shape[0]
    xp = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    parts = [torch.empty_like(xp) for _ in range(ws)]
    dist.all_gather(parts, xp.contiguous())
    return torch.cat([p[:k] for p, k in zip(parts, sizes)], dim=0), sizes


class _GatherLocalGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out, sizes = _gather_padded(x)
        r = dist.get_rank()
        ctx.start, ctx.n, ctx.world_size = sum(sizes[:r]), x.shape[0], len(sizes)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad[ctx.start : ctx.start + ctx.n] * ctx.world_size


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated in rank order; the gradient flows to the local shard only (scaled by
    the world size to undo DDP's averaging, see the module doc). Identity in a single process.
    """
    if world_size() == 1:
        return x
    return _GatherLocalGrad.apply(x)


def all_gather_tensor(x: torch.Tensor) -> torch.Tensor:
    """Gather without gradient (masks, counters); local sizes may differ."""
    if world_size() == 1:
        return x
    y = x.to(torch.uint8) if x.dtype == torch.bool else x  # gloo has no bool all_gather
    out, _ = _gather_padded(y)
    return out.bool() if x.dtype == torch.bool else out


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; CPU tensors travel through the GPU under nccl)."""
    if world_size() == 1:
        return values
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else values.device
    out = values.to(dev, copy=True)
    dist.all_reduce(out)
    return out.to(values.device)
