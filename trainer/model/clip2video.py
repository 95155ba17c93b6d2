"""CLIP2Video video head (Fang et al., 2021): Temporal Difference Block (TDB) and Temporal Alignment Block (TAB).

Reference: CLIP2VIDEO.md (paper arXiv 2106.11097 and CryhanFang/CLIP2Video ``modules/modeling.py``).

``CLIP2VideoHead(width, num_frames, **cfg)`` maps per-frame features ``f`` ``[B,T,D]`` (CLIP image embeddings
after the visual projection, *not* normalised) to a video feature ``[B,D]``:

TDB (global branch, ``forward``):
1. ``D_i = f_{i+1} - f_i`` (T-1 difference tokens);
2. ``D^_i = 2*sigmoid(LN(Enc1(D_i + P_{i+1}))) - 1`` with a 1-block transformer Enc1 ("frame2t_attention");
3. interleave ``[f_0, D^_0, f_1, ..., D^_{T-2}, f_{T-1}]`` (2T-1 tokens), add ``P_i + E[1]`` to frames and
   ``P_i + E[0]`` to differences (D^_i takes the position of the earlier frame i);
4. a 4-block transformer Enc4 ("transformerClip"), keep the frame outputs, add ``f_i`` back;
5. ``mean_i l2n(v_i)`` (the model L2-normalises the result again, giving CLIP2Video's ``l2n(mean(l2n))``).

TAB (local branch, ``tab_video`` / ``tab_text``): shared centers W (assignment) and C (anchors), K of them,
aggregate each modality's tokens NetVLAD-style: ``a = softmax_k(x W^T)``, ``r_k = sum_n mu_n a_nk (x_n - C_k)``,
``z = l2n(mean_k l2n(r_k))``. Video tokens are the raw frames plus motion tokens of the stride-2 subsampled
frames (TDB steps 1-4 with a 1-block "actionClip"); text tokens are the projected per-token text states
(SOT and padding masked out). Inference fuses ``s = lambda*s_g + (1-lambda)*s_TAB``; ``fuse`` builds
concatenated embeddings whose dot product is exactly that, so a plain ``text @ video.T`` evaluation can use it.

Deliberate differences from the released code (CLIP2VIDEO.md §7): masks are applied per sample through the
attention mask (no head-major tiling bug); the interleave index is vectorised (works on CPU); ``l2n`` has an
eps; a difference token is valid only when both of its frames are (``m_i * m_{i+1}``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer.model.attention import full_attention, masked_attention
from trainer.model.encoder import CLIPEncoder, init_clip_weights

_EPS = 1e-6


def _l2n(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=_EPS)


def interleave_index(t: int, device: torch.device | None = None) -> torch.Tensor:
    """Gather index of ``[f_0, d_0, f_1, d_1, ..., f_{t-1}]`` from ``cat([f (t), d (t-1)])``."""
    idx = torch.stack([torch.arange(t, device=device), t + torch.arange(t, device=device)], dim=-1)
    return idx.flatten()[: 2 * t - 1]


class CLIP2VideoHead(nn.Module):
    """TDB global head with an optional TAB local branch (see module docstring).

    Defaults are the paper's MSR-VTT settings: Enc1 1 block, Enc4 4 blocks, actionClip 1 block, heads =
    width/64, MLP 4*width, QuickGELU, LayerNorm eps 1e-12, position table 77, K=5 centers, lambda=0.5.
    """

    def __init__(
        self,
        width: int,
        num_frames: int,
        *,
        temporal_layers: int = 4,
        difference_layers: int = 1,
        action_layers: int = 1,
        heads: int = 0,
        max_frames: int = 77,
        temporal_proj: str = "sigmoid_selfA",
        tab: bool = False,
        centers: int = 5,
        center_weight: float = 0.5,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if temporal_proj not in ("sigmoid_selfA", "sigmoid_mlp", "none"):
            raise ValueError(
                f"temporal_proj must be sigmoid_selfA, sigmoid_mlp or none, got {temporal_proj!r}"
            )
        if not 0.0 <= center_weight <= 1.0:
            raise ValueError(f"center_weight must be in [0, 1], got {center_weight}")
        if num_frames > max_frames:
            raise ValueError(f"num_frames {num_frames} exceeds the position table ({max_frames})")
        heads = heads or max(1, width // 64)
        self.width, self.num_frames, self.max_frames = width, num_frames, max_frames
        self.temporal_proj, self.center_weight, self.use_tab = temporal_proj, center_weight, tab
        enc = partial(CLIPEncoder, width, heads=heads, intermediate_size=4 * width, eps=layer_norm_eps)
        self.frame_position_embeddings = nn.Embedding(max_frames, width)
        self.type_position_embeddings = nn.Embedding(2, width)
        self.transformer = enc(layers=temporal_layers)  # Enc4, "transformerClip"
        self.difference_transformer = enc(layers=difference_layers)  # Enc1, "frame2t_attention"
        self.difference_mlp = nn.Linear(width, width) if temporal_proj == "sigmoid_mlp" else None
        self.difference_norm = nn.LayerNorm(width)  # "trans_layernorm"
        self.action_transformer = enc(layers=action_layers) if tab else None  # "actionClip"
        init_clip_weights(self)
        if tab:
            # CLIP2Video keeps the centers at their own init, std = 64**-0.5, after the global re-init.
            self.weight_center = nn.Parameter(torch.randn(centers, width) * 64**-0.5)
            self.emb_center = nn.Parameter(torch.randn(centers, width) * 64**-0.5)

    # ------------------------------------------------------------------------------------------ TDB
    @staticmethod
    def _attend(mask: torch.Tensor | None):
        if mask is None:
            return partial(full_attention, dropout_p=0.0)
        # key mask [B, N] -> [B, 1, 1, N]; a query row with no valid key would give NaN, so always allow self
        return partial(masked_attention, mask=mask[:, None, None, :], dropout_p=0.0)

    def _difference_tokens(self, f: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Steps 1-2: attention-enhanced differences of adjacent frames, in (-1, 1)."""
        t = f.shape[1]
        d = f[:, 1:] - f[:, :-1]
        if self.temporal_proj == "none":
            return d
        if self.temporal_proj == "sigmoid_mlp":
            assert self.difference_mlp is not None
            return 2 * torch.sigmoid(self.difference_norm(self.difference_mlp(d))) - 1
        dmask = None if mask is None else mask[:, 1:] & mask[:, :-1]
        x = d + self.frame_position_embeddings.weight[1:t]
        x = self.difference_transformer(x, self._attend(_nonempty(dmask)))
        return 2 * torch.sigmoid(self.difference_norm(x)) - 1

    def _temporal(
        self, f: torch.Tensor, mask: torch.Tensor | None, encoder: CLIPEncoder
    ) -> torch.Tensor:  # fmt: skip
        """Steps 1-4 with ``encoder`` as the temporal transformer; returns the frame outputs + residual."""
        b, t, w = f.shape
        if t == 1:
            pos = self.frame_position_embeddings.weight[:1] + self.type_position_embeddings.weight[1]
            return encoder(f + pos, self._attend(mask)) + f
        d = self._difference_tokens(f, mask)
        pos = self.frame_position_embeddings.weight[:t]
        frames = f + pos + self.type_position_embeddings.weight[1]
        diffs = d + pos[: t - 1] + self.type_position_embeddings.weight[0]
        idx = interleave_index(t, f.device)
        x = torch.cat([frames, diffs], dim=1)[:, idx]
        tok_mask = None
        if mask is not None:
            tok_mask = torch.cat([mask, mask[:, 1:] & mask[:, :-1]], dim=1)[:, idx]
        h = encoder(x, self._attend(_nonempty(tok_mask)))
        return h[:, 0::2] + f  # frame tokens sit at the even positions

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """TDB video feature ``[B, D]`` (mean of normalised frame outputs; normalise again for cosine)."""
        if frames.ndim != 3 or frames.shape[-1] != self.width:
            raise ValueError(f"expected per-frame features [B, T, {self.width}], got {tuple(frames.shape)}")
        if frames.shape[1] > self.max_frames:
            raise ValueError(f"{frames.shape[1]} frames exceed the position table ({self.max_frames})")
        mask = None if frame_mask is None else frame_mask.bool()
        v = _l2n(self._temporal(frames, mask, self.transformer))
        return _masked_mean(v, mask)

    # ------------------------------------------------------------------------------------------ TAB
    def tab_video_tokens(
        self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw frames ``f_0..f_{T-1}`` followed by the motion tokens of ``f[::2]`` (T + ceil(T/2) tokens)."""
        if self.action_transformer is None:
            raise RuntimeError("this CLIP2VideoHead was built with tab=False")
        b, t, _ = frames.shape
        mask = (
            torch.ones(b, t, dtype=torch.bool, device=frames.device)
            if frame_mask is None
            else frame_mask.bool()
        )
        g, gmask = frames[:, ::2], mask[:, ::2]
        g_out = self._temporal(g, gmask, self.action_transformer)
        return torch.cat([frames, g_out], dim=1), torch.cat([mask, gmask], dim=1)

    def aggregate(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Shared-center NetVLAD-style aggregation: ``l2n(mean_k l2n(sum_n mu_n a_nk (x_n - C_k)))``."""
        a = torch.softmax(tokens @ self.weight_center.T, dim=-1) * mask[..., None].to(tokens.dtype)  # [B,N,K]
        # sum_n a_nk (x_n - C_k) = (a^T x)_k - (sum_n a_nk) C_k
        r = a.transpose(1, 2) @ tokens - a.sum(dim=1)[..., None] * self.emb_center  # [B,K,D]
        return _l2n(_l2n(r).mean(dim=1))

    def tab_video(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised TAB video embedding ``[B, D]``."""
        tokens, mask = self.tab_video_tokens(frames, frame_mask)
        return self.aggregate(tokens, mask)

    def tab_text(self, token_features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised TAB text embedding ``[B, D]`` from projected per-token text states ``[B, L, D]``
        (``text_projection`` applied to every token); SOT (position 0) and padding are masked out."""
        if self.action_transformer is None:
            raise RuntimeError("this CLIP2VideoHead was built with tab=False")
        mask = attention_mask.bool().clone()
        mask[:, 0] = False
        return self.aggregate(token_features, mask)

    def fuse(self, global_feature: torch.Tensor, tab_feature: torch.Tensor) -> torch.Tensor:
        """``[sqrt(l) l2n(g), sqrt(1-l) l2n(z)]``: unit-norm, and ``fuse(t)·fuse(v) = l s_g + (1-l) s_TAB``
        (CLIP2Video's inference fusion), so fused features work with any cosine-similarity evaluation."""
        lam = self.center_weight
        return torch.cat(
            [math.sqrt(lam) * _l2n(global_feature), math.sqrt(1 - lam) * _l2n(tab_feature)], dim=-1
        )

    @torch.no_grad()
    def init_from_text(self, text_model: Any) -> bool:
        """CLIP2Video initialisation from CLIP's text transformer: P = text positions, E = its first 2 rows,
        Enc4 = text blocks 0-3, Enc1 and actionClip = text block 0. Returns False (random init kept) when
        widths differ."""
        try:
            src_pos = text_model.embeddings.position_embedding.weight
            src_layers = text_model.encoder.layers
        except AttributeError:
            return False
        own_heads = self.transformer.layers[0].self_attn.heads  # type: ignore[union-attr]
        if src_pos.shape[1] != self.width or src_layers[0].self_attn.heads != own_heads:
            return False
        targets: list[Any] = [self.transformer, self.difference_transformer]
        if self.action_transformer is not None:
            targets.append(self.action_transformer)
        pairs = [(dst, src) for enc in targets for dst, src in zip(enc.layers, src_layers, strict=False)]
        if any(not _same_shapes(dst, src) for dst, src in pairs):
            return False  # e.g. a different MLP width: keep the random init rather than half-copy
        n = min(src_pos.shape[0], self.max_frames)
        self.frame_position_embeddings.weight[:n].copy_(src_pos[:n])
        self.type_position_embeddings.weight.copy_(src_pos[:2])
        for dst, src in pairs:
            _copy_layer(dst, src)
        return True


def _same_shapes(dst: nn.Module, src: nn.Module) -> bool:
    a, b = dst.state_dict(), src.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def _copy_layer(dst: nn.Module, src: nn.Module) -> None:
    # The head's LayerNorm eps differs from the text tower's; parameters are copied, eps is kept.
    dst.load_state_dict(src.state_dict())


def _nonempty(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A sample with no valid token would make every attention row NaN; let it attend everywhere instead."""
    if mask is None:
        return None
    empty = ~mask.any(dim=1, keepdim=True)
    return mask | empty


def _masked_mean(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return v.mean(dim=1)
    m = mask[..., None].to(v.dtype)
    return (v * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def symmetric_ce(sim: torch.Tensor) -> torch.Tensor:
    """CLIP2Video's ``Lsym(S) = (CE_rows(S) + CE_rows(S^T)) / 2`` with targets on the diagonal."""
    target = torch.arange(sim.shape[0], device=sim.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2


def clip2video_loss_terms(
    logit_scale: torch.Tensor,
    text_global: torch.Tensor,
    video_global: torch.Tensor,
    text_tab: torch.Tensor,
    video_tab: torch.Tensor,
    center_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(``l Lsym(s_g) + (1-l) Lsym(s_TAB)``, ``{"global": Lsym(s_g), "tab": Lsym(s_TAB)}``) with l =
    ``center_weight``; inputs are features (normalised here), ``logit_scale`` is in log space and shared by
    both branches."""
    scale = logit_scale.exp()
    terms = {
        "global": symmetric_ce(scale * _l2n(text_global) @ _l2n(video_global).T),
        "tab": symmetric_ce(scale * _l2n(text_tab) @ _l2n(video_tab).T),
    }
    return center_weight * terms["global"] + (1 - center_weight) * terms["tab"], terms


def clip2video_loss(
    logit_scale: torch.Tensor,
    text_global: torch.Tensor,
    video_global: torch.Tensor,
    text_tab: torch.Tensor | None = None,
    video_tab: torch.Tensor | None = None,
    center_weight: float = 0.5,
) -> torch.Tensor:
    """Training loss of CLIP2Video: ``l Lsym(s_g) + (1-l) Lsym(s_TAB)`` (losses mixed, logits mixed only at
    inference). Inputs are normalised features; ``logit_scale`` is in log space."""
    if text_tab is None or video_tab is None:
        return symmetric_ce(logit_scale.exp() * _l2n(text_global) @ _l2n(video_global).T)
    return clip2video_loss_terms(logit_scale, text_global, video_global, text_tab, video_tab, center_weight)[
        0
    ]
