"""CLIP ViT vision tower with video proxy tokens (CLIP-ViP), Hugging Face parameter names.

Token layout: `[CLS, proxy_1..proxy_P, frame_1 patches, ..., frame_T patches]`.
- Spatial position: CLIP's table; patches of every frame get pos[1:], CLS and all proxies get pos[0].
- Temporal position: `temporal_embedding` [1, num_frames, W], zero-init, added to patch tokens only,
  linearly resized (align_corners=False) when T differs from the table length.
- Proxies (`added_cls`, [P, W]) start N(0, 1), as in CLIP-ViP (its init never touches them).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from trainer.model.attention import AttendFn, full_attention, vip_attention
from trainer.model.config import VisionConfig
from trainer.model.encoder import CLIPEncoder

ATTENTION_MODES = ("vip", "full")


def resize_temporal(table: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[1, F, W] -> [1, T, W] by linear interpolation (T=1 gives the mean of the two middle rows for even F)."""
    if table.shape[1] == num_frames:
        return table
    resized = F.interpolate(table.transpose(1, 2), size=num_frames, mode="linear", align_corners=False)
    return resized.transpose(1, 2)


class CLIPVisionViPEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig, num_proxies: int, num_frames: int) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.class_embedding = nn.Parameter(torch.randn(w))
        self.patch_embedding = nn.Conv2d(3, w, kernel_size=cfg.patch, stride=cfg.patch, bias=False)
        self.position_embedding = nn.Embedding(cfg.num_patches + 1, w)
        self.num_proxies = num_proxies
        if num_proxies > 0:
            self.added_cls = nn.Parameter(torch.randn(num_proxies, w))
        self.temporal_embedding = nn.Parameter(torch.zeros(1, num_frames, w))

    @property
    def num_global(self) -> int:
        return 1 + self.num_proxies

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, T, 3, H, W] -> tokens [B, M + T*L, W]."""
        if pixels.dim() != 5 or pixels.shape[2] != 3:
            raise ValueError(f"expected pixels [B, T, 3, H, W], got {tuple(pixels.shape)}")
        b, t, _, h, w_img = pixels.shape
        size = self.cfg.image_size
        if h != size or w_img != size:
            raise ValueError(f"input frames are {h}x{w_img}, the model expects {size}x{size}")
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixels.reshape(b * t, 3, h, w_img).to(weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)  # [B*T, L, W]
        pos = self.position_embedding.weight
        patches = patches.view(b, t, -1, weight.shape[0]) + pos[1:]
        patches = patches + resize_temporal(self.temporal_embedding, t).unsqueeze(2)
        glob = self.class_embedding.unsqueeze(0)
        if self.num_proxies > 0:
            glob = torch.cat([glob, self.added_cls], dim=0)
        glob = (glob + pos[0]).unsqueeze(0).expand(b, -1, -1)
        return torch.cat([glob, patches.flatten(1, 2)], dim=1)


class CLIPVisionViPModel(nn.Module):
    """`vision_model.*` of the checkpoint. forward(pixels) -> post-layernormed token 0, [B, W]."""

    def __init__(self, cfg: VisionConfig, num_proxies: int, num_frames: int, attention: str = "vip") -> None:
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        self.attention = attention
        self.cfg = cfg
        self.embeddings = CLIPVisionViPEmbeddings(cfg, num_proxies, num_frames)
        self.pre_layrnorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.encoder = CLIPEncoder(
            cfg.width, cfg.layers, cfg.heads, cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps
        )
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def attend_fn(self, num_frames: int) -> AttendFn:
        p = self.cfg.attention_dropout if self.training else 0.0
        if self.attention == "full":
            return partial(full_attention, dropout_p=p)
        return partial(
            vip_attention, num_global=self.embeddings.num_global, num_frames=num_frames, dropout_p=p
        )

    def forward_tokens(self, pixels: torch.Tensor, attend: AttendFn | None = None) -> torch.Tensor:
        """All output tokens [B, M + T*L, W] (before post_layernorm)."""
        x = self.pre_layrnorm(self.embeddings(pixels))
        return self.encoder(x, attend if attend is not None else self.attend_fn(pixels.shape[1]))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.forward_tokens(pixels)[:, 0])
