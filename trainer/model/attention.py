"""Attention kernels: ViP-guided attention (efficient and dense reference), full and masked attention.

All functions take q, k, v shaped [B, H, N, d] and return [B, H, N, d]. The token layout for video is
`[M global tokens (CLS + proxies), frame_1 patches (L), ..., frame_T patches (L)]`.

ViP-guided attention (CLIP-ViP, `CLIPAttention.forward2`): patch queries attend to the M global tokens
and to the patches of their own frame; global queries attend to everything. The efficient version
never builds the (M+TL)^2 mask: it runs one attention for the M global queries over all keys and one
batched attention with T*H "heads" of L queries over M+L keys each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# (q, k, v) -> out, all [B, H, N, d]
AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """`mask` is boolean, True = may attend, broadcastable to [B, H, N, N]."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def vip_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_global: int,
    num_frames: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Efficient ViP-guided attention (no dense mask)."""
    b, h, n, d = q.shape
    m, t = num_global, num_frames
    if t == 1:
        # One frame: every token may see every token, i.e. plain attention.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if m < 1 or (n - m) % t:
        raise ValueError(f"sequence length {n} does not split into {m} global tokens + {t} equal frames")
    frame_len = (n - m) // t

    out_global = F.scaled_dot_product_attention(q[:, :, :m], k, v, dropout_p=dropout_p)

    def per_frame_keys(x: torch.Tensor) -> torch.Tensor:
        glob = x[:, :, :m].unsqueeze(2).expand(b, h, t, m, d)
        frames = x[:, :, m:].reshape(b, h, t, frame_len, d)
        return torch.cat([glob, frames], dim=3).reshape(b, h * t, m + frame_len, d)

    q_frames = q[:, :, m:].reshape(b, h * t, frame_len, d)
    out_frames = F.scaled_dot_product_attention(
        q_frames, per_frame_keys(k), per_frame_keys(v), dropout_p=dropout_p
    )
    return torch.cat([out_global, out_frames.reshape(b, h, t * frame_len, d)], dim=2)


def vip_mask(
    num_global: int, num_frames: int, frame_len: int, device: torch.device | None = None
) -> torch.Tensor:
    """Dense boolean [N, N] mask of ViP attention: allowed(q,k) = q<M or k<M or frame(q)==frame(k)."""
    m = num_global
    n = m + num_frames * frame_len
    idx = torch.arange(n, device=device)
    frame = torch.where(idx < m, -1, (idx - m) // frame_len)
    is_global = idx < m
    return is_global[:, None] | is_global[None, :] | (frame[:, None] == frame[None, :])


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Explicit softmax(q k^T / sqrt(d) + mask) v, kept independent of SDPA for tests and benchmarks."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def dense_vip_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_global: int, num_frames: int
) -> torch.Tensor:
    """Reference ViP attention that materialises the dense (M+TL)^2 mask."""
    n = q.shape[2]
    frame_len = (n - num_global) // num_frames
    return reference_attention(q, k, v, vip_mask(num_global, num_frames, frame_len, q.device))
