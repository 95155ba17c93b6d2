"""A padding-free forward pass of a BERT encoder (all-MiniLM-L6-v2) for sentence embeddings.

Texts of a batch are packed end to end: every linear layer, layer norm and activation runs on the
real tokens only, [T, W] with T the sum of the texts' lengths, and attention runs once per group of
equally long texts with no mask at all. Padded batches spend time on pad tokens (16% more tokens
than real ones for sentence-transformers' character-length sort on the NMI bench texts) and on the
padding mask; here neither exists. The arithmetic per real token is the one of Hugging Face's
`BertModel` (post-LN blocks, exact GELU), so features agree with it to float rounding (~1e-7).

The weights come from a loaded `transformers` BERT (`state_dict` names), so loading and verification
stay with the caller; the query, key and value projections are fused into one matrix here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_ENC = "encoder.layer.{}."


def length_runs(lengths: list[int]) -> list[tuple[int, int]]:
    """Runs of equal neighbours as (count, length): [3, 3, 5] -> [(2, 3), (1, 5)]."""
    runs: list[tuple[int, int]] = []
    for length in lengths:
        if runs and runs[-1][1] == length:
            runs[-1] = (runs[-1][0] + 1, length)
        else:
            runs.append((1, length))
    return runs


@dataclass(frozen=True)
class _Layer:
    qkv_w: torch.Tensor  # [3W, W]: query, key, value stacked
    qkv_b: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor
    ln1: tuple[torch.Tensor, torch.Tensor]
    fc1_w: torch.Tensor
    fc1_b: torch.Tensor
    fc2_w: torch.Tensor
    fc2_b: torch.Tensor
    ln2: tuple[torch.Tensor, torch.Tensor]


class PackedBert:
    """`mean_pool(ids)`: L2-normalised mean of the last hidden states of each text, [N, W].

    Built from a BERT `state_dict` (no `bert.` prefix) and its head count and layer-norm epsilon."""

    def __init__(self, sd: dict[str, torch.Tensor], heads: int, eps: float, hidden_act: str = "gelu") -> None:
        if hidden_act != "gelu":
            raise ValueError(f"packed BERT implements hidden_act 'gelu' (exact), not {hidden_act!r}")
        self.heads, self.eps = heads, eps
        self.word = sd["embeddings.word_embeddings.weight"]
        self.pos = sd["embeddings.position_embeddings.weight"]
        self.type0 = sd["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (sd["embeddings.LayerNorm.weight"], sd["embeddings.LayerNorm.bias"])
        self.width = self.word.shape[1]
        if self.width % heads:
            raise ValueError(f"width {self.width} does not split into {heads} heads")
        self.layers: list[_Layer] = []
        while (_ENC.format(len(self.layers)) + "attention.self.query.weight") in sd:
            p = _ENC.format(len(self.layers))
            att = p + "attention."
            self.layers.append(
                _Layer(
                    qkv_w=torch.cat([sd[f"{att}self.{n}.weight"] for n in ("query", "key", "value")]),
                    qkv_b=torch.cat([sd[f"{att}self.{n}.bias"] for n in ("query", "key", "value")]),
                    out_w=sd[att + "output.dense.weight"],
                    out_b=sd[att + "output.dense.bias"],
                    ln1=(sd[att + "output.LayerNorm.weight"], sd[att + "output.LayerNorm.bias"]),
                    fc1_w=sd[p + "intermediate.dense.weight"],
                    fc1_b=sd[p + "intermediate.dense.bias"],
                    fc2_w=sd[p + "output.dense.weight"],
                    fc2_b=sd[p + "output.dense.bias"],
                    ln2=(sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"]),
                )
            )
        if not self.layers:
            raise ValueError("state dict holds no encoder.layer.0: not a BERT encoder")

    @property
    def max_length(self) -> int:
        return int(self.pos.shape[0])

    def _ln(self, x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.layer_norm(x, (self.width,), wb[0], wb[1], self.eps)

    def _attend(self, qkv: torch.Tensor, groups: list[tuple[int, int]]) -> torch.Tensor:
        """Self-attention of packed [T, 3W] projections; `groups` = (texts, length) runs in order."""
        h, d = self.heads, self.width // self.heads
        outs, start = [], 0
        for n, length in groups:
            stop = start + n * length
            q, k, v = qkv[start:stop].view(n, length, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            o = F.scaled_dot_product_attention(q, k, v)  # [n, h, L, d]; no padding, so no mask
            outs.append(o.transpose(1, 2).reshape(n * length, self.width))
            start = stop
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def mean_pool(self, ids: list[list[int]]) -> torch.Tensor:
        """Texts' token ids (special tokens included, each within `max_length`), sorted by length or
        not; equally long neighbours share one attention call. Returns [N, W], rows L2-normalised."""
        lengths = [len(t) for t in ids]
        if not ids or min(lengths) < 1 or max(lengths) > self.max_length:
            raise ValueError(f"every text needs 1..{self.max_length} tokens, got lengths {lengths}")
        groups = length_runs(lengths)
        dev = self.word.device
        flat = torch.tensor([i for t in ids for i in t], dtype=torch.long, device=dev)
        positions = torch.cat([torch.arange(n, device=dev) for n in lengths])
        x = self._ln(F.embedding(flat, self.word) + self.pos[positions] + self.type0, self.emb_ln)
        for lay in self.layers:
            att = F.linear(self._attend(F.linear(x, lay.qkv_w, lay.qkv_b), groups), lay.out_w, lay.out_b)
            x = self._ln(x + att, lay.ln1)
            x = self._ln(
                x + F.linear(F.gelu(F.linear(x, lay.fc1_w, lay.fc1_b)), lay.fc2_w, lay.fc2_b), lay.ln2
            )
        pooled, start = [], 0
        for n, length in groups:
            pooled.append(x[start : start + n * length].view(n, length, self.width).mean(1))
            start += n * length
        return F.normalize(torch.cat(pooled), dim=-1)
