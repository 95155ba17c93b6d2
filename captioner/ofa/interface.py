"""What passes between the OFA network and beam search: the special token ids, the encoder's output, and
the calls beam search makes. A leaf module, so `generate` and `tokenizer` need no import of the network
(and the network can offer `OFA.generate` / `OFA.from_checkpoint` without an import circle)."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch

from captioner.ofa.config import OFAConfig

BOS, PAD, EOS, UNK = 0, 1, 2, 3


@dataclasses.dataclass
class EncoderOut:
    """Encoder output in batch-first layout: x [B, S, C], padding_mask [B, S] (True = pad), pos [S, C]."""

    x: torch.Tensor
    padding_mask: torch.Tensor
    pos: torch.Tensor


class Seq2Seq(Protocol):
    """The part of `captioner.ofa.model.OFA` that beam search uses."""

    cfg: OFAConfig
    decoder: Any  # .init_state(enc, group, max_len, use_cache) -> per-batch decoder state

    def encode(
        self, src_tokens: torch.Tensor, patch_images: torch.Tensor, patch_masks: torch.Tensor | None = None
    ) -> EncoderOut: ...

    def decode_step(self, tokens: torch.Tensor, state: Any, step: int) -> torch.Tensor: ...
