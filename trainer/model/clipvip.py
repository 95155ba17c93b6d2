"""CLIP-ViP model: CLIP with video proxy tokens and ViP-guided attention (Xue et al., ICLR 2023).

Parameter names follow Hugging Face `CLIPModel` (`vision_model.*`, `text_model.*`, `visual_projection`,
`text_projection`, `logit_scale`), plus `vision_model.embeddings.added_cls` (proxies) and
`vision_model.embeddings.temporal_embedding` as in the official CLIP-ViP checkpoints, and `video_head.*`
for the per-frame baselines.

Public API:
    ClipViPConfig, tiny_config          architecture (trainer.model.config)
    CLIPViP(config)                      .encode_video(pixels[B,T,3,H,W]) / .encode_text(ids, mask)
                                         CLIP2Video TAB: .clip2video_video / .clip2video_text / .clip2video_similarity
    (loading and saving: trainer.model.weights; the package trainer.model exports all of these)
"""

from __future__ import annotations

from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from trainer.model.config import (
    PER_FRAME_HEADS,
    VIDEO_HEADS,
    ClipViPConfig,
    SeqTransfConfig,
    TextConfig,
    VisionConfig,
    tiny_config,
)
from trainer.model.encoder import CLIPEncoder, init_clip_weights
from trainer.model.heads import build_video_head
from trainer.model.text import CLIPTextModel
from trainer.model.vision import CLIPVisionViPModel

__all__ = [
    "CLIPViP",
    "ClipViPConfig",
    "PER_FRAME_HEADS",
    "SeqTransfConfig",
    "TextConfig",
    "VIDEO_HEADS",
    "VisionConfig",
    "tiny_config",
]


class CLIPViP(nn.Module):
    def __init__(self, config: ClipViPConfig) -> None:
        super().__init__()
        self.config = config
        attention = "full" if config.video_head == "full" else "vip"
        self.vision_model = CLIPVisionViPModel(
            config.vision, config.effective_num_proxies, config.num_frames, attention
        )
        self.text_model = CLIPTextModel(config.text)
        self.visual_projection = nn.Linear(config.vision.width, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text.width, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self._init_random()
        self.video_head = build_video_head(config)

    def _init_random(self) -> None:
        # Random init for from-scratch models; checkpoint loading overwrites all CLIP weights.
        init_clip_weights(self.vision_model)
        init_clip_weights(self.text_model)
        init_clip_weights(self.visual_projection)
        init_clip_weights(self.text_projection)
        emb = self.vision_model.embeddings
        with torch.no_grad():
            emb.class_embedding.normal_(std=0.02)
            if emb.num_proxies:
                emb.added_cls.normal_()  # N(0, 1), as in CLIP-ViP
            emb.temporal_embedding.zero_()

    # ---- features -------------------------------------------------------------------------
    def frame_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-frame projected features [B, T, D] (each frame encoded alone, as an image)."""
        b, t = pixels.shape[:2]
        pooled = self.vision_model(pixels.reshape(b * t, 1, *pixels.shape[2:]))
        return self.visual_projection(pooled).view(b, t, -1)

    def encode_video(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """pixels [B, T, 3, H, W] (CLIP-normalised) -> [B, D]; an image is T=1."""
        if pixels.dim() == 4:
            raise ValueError("encode_video expects [B, T, 3, H, W]; pass images as [B, 1, 3, H, W]")
        if self.video_head is None:
            feats = self.visual_projection(self.vision_model(pixels))
        elif pixels.shape[1] == 1:
            # A single frame/image: the per-frame feature itself (no temporal pooling to do).
            feats = self.frame_features(pixels)[:, 0]
        else:
            feats = self.video_head(self.frame_features(pixels))
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """pixels [B, 3, H, W] -> [B, D] (same tower, T=1)."""
        return self.encode_video(pixels.unsqueeze(1), normalize=normalize)

    @overload
    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = ...,
        normalize: bool = ...,
        return_tokens: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = ...,
        normalize: bool = ...,
        *,
        return_tokens: Literal[True],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        normalize: bool = True,
        return_tokens: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, D] sentence features; with ``return_tokens`` also the projected (not normalised) states of every
        token [B, L, D] and the attention mask [B, L] (all ones when none was given), for CLIP2Video's TAB."""
        if not return_tokens:
            feats = self.text_projection(self.text_model(input_ids, attention_mask))
            return F.normalize(feats, dim=-1) if normalize else feats
        tokens = self.text_projection(self.text_model.token_states(input_ids, attention_mask))
        idx = self.text_model.pool_index(input_ids)
        feats = tokens[torch.arange(tokens.shape[0], device=tokens.device), idx]
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return (F.normalize(feats, dim=-1) if normalize else feats), tokens, mask

    # ---- CLIP2Video Temporal Alignment Block ----------------------------------------------------
    @property
    def uses_tab(self) -> bool:
        """True for ``video_head: clip2video`` built with ``tab: true`` (TDB + TAB, the paper's full model)."""
        return bool(getattr(self.video_head, "use_tab", False))

    def tab_head(self) -> Any:
        """The CLIP2Video head when TAB is on; a clear error otherwise."""
        if not self.uses_tab:
            raise RuntimeError(
                "CLIP2Video TAB needs video_head='clip2video' with clip2video={'tab': True}, got "
                f"video_head={self.config.video_head!r}, clip2video={self.config.clip2video!r}"
            )
        return self.video_head

    def clip2video_video(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(TDB global feature, TAB feature), both unit-norm [B, D], from one pass of the frame tower."""
        head = self.tab_head()
        frames = self.frame_features(pixels)
        return F.normalize(head(frames), dim=-1), head.tab_video(frames)

    def clip2video_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sentence feature, TAB feature), both unit-norm [B, D], from one pass of the text tower."""
        head = self.tab_head()
        feats, tokens, mask = self.encode_text(input_ids, attention_mask, return_tokens=True)
        return feats, head.tab_text(tokens, mask)

    def clip2video_similarity(
        self, text: tuple[torch.Tensor, torch.Tensor], video: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """CLIP2Video's inference score ``l s_g + (1-l) s_TAB`` [texts, videos] from ``clip2video_text`` /
        ``clip2video_video`` outputs, in cosine units (``exp(logit_scale)`` scales both terms alike)."""
        lam = self.tab_head().center_weight
        return lam * text[0] @ video[0].T + (1 - lam) * text[1] @ video[1].T

    def retrieval_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit-norm video embeddings for retrieval: ``encode_video``, or with TAB the fused
        ``[sqrt(l) g, sqrt(1-l) z]`` [B, 2D] (``CLIP2VideoHead.fuse``), so that ``retrieval_text(q) @
        retrieval_video(v).T`` is exactly ``clip2video_similarity``."""
        if not self.uses_tab:
            return self.encode_video(pixels)
        return self.tab_head().fuse(*self.clip2video_video(pixels))

    def retrieval_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unit-norm text embeddings for retrieval (see ``retrieval_video``)."""
        if not self.uses_tab:
            return self.encode_text(input_ids, attention_mask)
        return self.tab_head().fuse(*self.clip2video_text(input_ids, attention_mask))

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {
            "vis_features": self.encode_video(pixels),
            "text_features": self.encode_text(input_ids, attention_mask),
        }

    # ---- training helpers -----------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in self.modules():
            if isinstance(module, CLIPEncoder):
                module.grad_checkpointing = enable
