"""Per-frame video heads (CLIP-ViP Table 2 baselines): features [B, T, D] -> video feature [B, D].

Inputs are per-frame CLIP features after `visual_projection`, before normalisation. Following CLIP4Clip
(meanP / seqTransf), frame features are L2-normalised before the temporal mean; the model normalises the
pooled result again.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from trainer.model.attention import full_attention
from trainer.model.clip2video import CLIP2VideoHead
from trainer.model.config import ClipViPConfig, SeqTransfConfig
from trainer.model.encoder import CLIPEncoder, init_clip_weights
from trainer.model.text import CLIPTextModel


class MeanPoolHead(nn.Module):
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(frames, dim=-1).mean(dim=1)


class SeqTransfHead(nn.Module):
    """CLIP4Clip seqTransf: frame position embedding -> transformer -> residual add -> mean."""

    def __init__(self, width: int, cfg: SeqTransfConfig) -> None:
        super().__init__()
        heads = cfg.heads or max(1, width // 64)
        self.frame_position_embeddings = nn.Embedding(cfg.max_frames, width)
        self.encoder = CLIPEncoder(width, cfg.layers, heads, 4 * width)
        init_clip_weights(self)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        t = frames.shape[1]
        if t > self.frame_position_embeddings.num_embeddings:
            raise ValueError(
                f"{t} frames exceed the seqTransf table ({self.frame_position_embeddings.num_embeddings})"
            )
        x = frames + self.frame_position_embeddings.weight[:t]
        x = self.encoder(x, partial(full_attention, dropout_p=0.0)) + frames
        return F.normalize(x, dim=-1).mean(dim=1)

    @torch.no_grad()
    def init_from_text(self, text_model: CLIPTextModel) -> bool:
        """CLIP4Clip starts seqTransf from CLIP's text transformer (position table + first layers).

        Returns False (and keeps the random init) when widths or head counts differ.
        """
        src_layers = text_model.encoder.layers
        if text_model.cfg.width != self.frame_position_embeddings.embedding_dim:
            return False
        src_pos = text_model.embeddings.position_embedding.weight
        n = min(src_pos.shape[0], self.frame_position_embeddings.num_embeddings)
        self.frame_position_embeddings.weight[:n].copy_(src_pos[:n])
        for dst, src in zip(self.encoder.layers, src_layers, strict=False):
            dst.load_state_dict(src.state_dict())
        return True


def build_video_head(cfg: ClipViPConfig) -> nn.Module | None:
    """The per-frame head for `cfg.video_head`, or None for the token-level heads ("vip", "full")."""
    if cfg.video_head == "meanpool":
        return MeanPoolHead()
    if cfg.video_head == "seqtransf":
        return SeqTransfHead(cfg.projection_dim, cfg.seqtransf)
    if cfg.video_head == "clip2video":
        return CLIP2VideoHead(cfg.projection_dim, cfg.num_frames, **cfg.clip2video)
    return None
