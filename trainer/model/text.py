"""CLIP text tower (Hugging Face parameter names): causal + padding mask, final_layer_norm, EOT pooling."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from trainer.model.attention import masked_attention
from trainer.model.config import TextConfig
from trainer.model.encoder import CLIPEncoder

# Old hub configs carry eos_token_id == 2; HF then pools at input_ids.argmax(-1) (EOT is the largest id).
_LEGACY_EOS_ID = 2


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab, cfg.width)
        self.position_embedding = nn.Embedding(cfg.context_length, cfg.width)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        if n > self.position_embedding.num_embeddings:
            raise ValueError(
                f"text length {n} exceeds context_length {self.position_embedding.num_embeddings}"
            )
        return self.token_embedding(input_ids) + self.position_embedding.weight[:n]


class CLIPTextModel(nn.Module):
    """`text_model.*`. forward(ids, mask) -> final-layernormed EOT token, [B, W]."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(
            cfg.width, cfg.layers, cfg.heads, cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps
        )
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def pool_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.eos_token_id == _LEGACY_EOS_ID:
            return input_ids.argmax(dim=-1)
        is_eos = input_ids == self.cfg.eos_token_id
        if not bool(is_eos.any(dim=-1).all()):
            raise ValueError(f"every text must contain the end-of-text token id {self.cfg.eos_token_id}")
        return is_eos.int().argmax(dim=-1)  # first EOT (padding also uses the EOT id)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.token_states(input_ids, attention_mask)
        return x[torch.arange(x.shape[0], device=x.device), self.pool_index(input_ids)]

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final-layernormed states of every token, [B, L, W] (CLIP2Video's TAB aggregates them)."""
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids [B, L], got {tuple(input_ids.shape)}")
        n = input_ids.shape[1]
        allowed = torch.ones(n, n, dtype=torch.bool, device=input_ids.device).tril()
        if attention_mask is not None:
            keys = attention_mask.to(torch.bool)[:, None, None, :]
            # The diagonal keeps fully padded query rows finite; it never reaches non-pad tokens.
            allowed = (allowed & keys) | torch.eye(n, dtype=torch.bool, device=input_ids.device)
        p = self.cfg.attention_dropout if self.training else 0.0
        x = self.encoder(self.embeddings(input_ids), partial(masked_attention, mask=allowed, dropout_p=p))
        return self.final_layer_norm(x)
