"""Pre-LN CLIP transformer blocks with Hugging Face parameter names.

`CLIPEncoder(width, layers, heads, intermediate_size)` holds `layers.{i}.self_attn.{q,k,v,out}_proj`,
`layer_norm1`, `mlp.fc1`, `mlp.fc2`, `layer_norm2` exactly as `transformers.CLIPEncoder`. The attention
pattern is supplied per call as an `AttendFn` so the same blocks serve ViP, full, causal text and the
seqTransf head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainer.model.attention import AttendFn


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


ACTIVATIONS = {"quick_gelu": _quick_gelu, "gelu": _gelu}


class CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        b, n, w = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        out = attend(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class CLIPMLP(nn.Module):
    def __init__(self, width: int, intermediate_size: int, hidden_act: str) -> None:
        super().__init__()
        if hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {hidden_act!r}; known: {sorted(ACTIVATIONS)}")
        self.act = ACTIVATIONS[hidden_act]
        self.fc1 = nn.Linear(width, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, intermediate_size: int, hidden_act: str, eps: float) -> None:
        super().__init__()
        self.self_attn = CLIPAttention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.mlp = CLIPMLP(width, intermediate_size, hidden_act)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), attend)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        intermediate_size: int,
        hidden_act: str = "quick_gelu",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CLIPEncoderLayer(width, heads, intermediate_size, hidden_act, eps) for _ in range(layers)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        for layer in self.layers:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                # Recompute activations in backward: trades ~30% compute for layer-activation memory.
                x = checkpoint(layer, x, attend, use_reentrant=False)
            else:
                x = layer(x, attend)
        return x


def init_clip_weights(module: nn.Module, std: float = 0.02) -> None:
    """Simple CLIP-like init for from-scratch (tiny) models: N(0, 0.02) linear/embeddings, LN = (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
