"""Relative-position bucket tables and image position ids of OFA.

OFA registers these tables as buffers and stores them in checkpoints; we recompute them and check the stored
copies against ours (see `checkpoint.load_official_state_dict`), so the formulas here are tested against the
official buffers.
"""

from __future__ import annotations

import math

import torch

TOKEN_TABLE_POSITIONS = 1024  # OFA always builds the token table for 1024 positions, whatever the bucket size
DECODER_IMAGE_POSITION_PAD = 769  # trailing entries of decoder.image_position_idx (value 1024)


def token_buckets(bucket_size: int, max_pos: int = TOKEN_TABLE_POSITIONS) -> torch.Tensor:
    """[max_pos, max_pos] bucket index of the relative distance i - j: exact up to bucket_size/2, log beyond."""
    rel = torch.arange(max_pos)[:, None] - torch.arange(max_pos)[None, :]
    mid = bucket_size // 2
    sign = torch.sign(rel)
    # Distances inside the exact band are replaced by mid-1 before the log so it stays finite there.
    absr = torch.where((rel < mid) & (rel > -mid), torch.full_like(rel, mid - 1), rel.abs())
    log_pos = torch.ceil(torch.log(absr / mid) / math.log((max_pos - 1) / mid) * (mid - 1)) + mid
    bucket = torch.where(absr <= mid, rel, log_pos.long() * sign)
    return bucket.long() + bucket_size - 1


def image_buckets(bucket_size: int) -> torch.Tensor:
    """[(K*K+1), (K*K+1)] BEiT-style 2-D relative bucket table; row/column 0 are the reserved position 0."""
    n_rel = (2 * bucket_size - 1) ** 2 + 3
    hh, ww = torch.meshgrid(torch.arange(bucket_size), torch.arange(bucket_size), indexing="ij")
    coords = torch.stack([hh.flatten(), ww.flatten()])
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    idx = (rel[..., 0] + bucket_size - 1) * (2 * bucket_size - 1) + (rel[..., 1] + bucket_size - 1)
    n = bucket_size * bucket_size + 1
    table = torch.zeros(n, n, dtype=torch.long)
    table[1:, 1:] = idx
    table[0, :] = n_rel - 3
    table[:, 0] = n_rel - 2
    table[0, 0] = n_rel - 1
    return table


def image_position_ids(
    grid_h: int, grid_w: int, bucket_size: int, device: torch.device | None = None
) -> torch.Tensor:
    """Row-major position ids of an image grid. The row stride is the bucket size, not the grid width."""
    rows = torch.arange(grid_h, device=device)[:, None] * bucket_size
    return (rows + torch.arange(grid_w, device=device)[None, :] + 1).flatten()


def decoder_image_position_idx(code_image_size: int, bucket_size: int) -> torch.Tensor:
    """The decoder's image-code position buffer (used only for image generation; kept for exact state dicts)."""
    window = code_image_size // 8
    ids = image_position_ids(window, window, bucket_size)
    return torch.cat([torch.zeros(1, dtype=torch.long), ids, torch.full((DECODER_IMAGE_POSITION_PAD,), 1024)])
