"""AdamW parameter groups: (lr_mul params, the rest) x (decay, no-decay), as the official code builds them.

No-decay choice (CLIPVIP.md §4.3). The official list ``['bias', 'LayerNorm.bias', 'LayerNorm.weight',
'logit_scale']`` is matched against parameter NAMES, but HF CLIP names its norms ``layer_norm1/2``,
``pre_layrnorm``, ``post_layernorm`` and ``final_layer_norm``, so the LayerNorm gains are decayed towards 0
(only biases, matched by "bias", and logit_scale escape). Decaying a LayerNorm gain shrinks
the scale of every normalised activation, which is not a regulariser anyone intends; CLIP and most ViT
recipes exempt norms. Our default ``"norms_biases"`` exempts, by module type rather than by name: every
bias, every parameter of a LayerNorm module, and ``logit_scale`` (a temperature must not be pulled towards
1). Embedding tables, the video proxies and the temporal table keep weight decay, exactly as in the
official code, so the only difference from it is the LayerNorm gains. ``"official"`` reproduces the
name-list behaviour for parity runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

OFFICIAL_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight", "logit_scale")


def no_decay_names(model: nn.Module, rule: str) -> set[str]:
    """Names of the trainable parameters that get no weight decay under ``rule``."""
    names: set[str] = set()
    if rule == "official":
        for n, p in model.named_parameters():
            if p.requires_grad and any(nd in n for nd in OFFICIAL_NO_DECAY):
                names.add(n)
        return names
    if rule != "norms_biases":
        raise ValueError(f"unknown no-decay rule {rule!r}")
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if not p.requires_grad:
                continue
            if isinstance(mod, nn.LayerNorm | nn.GroupNorm | nn.BatchNorm1d) or p_name == "bias":
                names.add(full)
            if full.endswith("logit_scale"):
                names.add(full)
    return names


def param_groups(
    model: nn.Module, weight_decay: float, rule: str, lr_mul: float = 1.0, lr_mul_prefix: str = ""
) -> list[dict[str, Any]]:
    """Up to four groups; each carries ``lr_mul`` (the scheduler sets ``lr = base * lr_mul``) and a name."""
    nd = no_decay_names(model, rule)
    groups: dict[tuple[bool, bool], list[tuple[str, nn.Parameter]]] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mul = bool(lr_mul_prefix) and n.startswith(lr_mul_prefix)
        groups.setdefault((mul, n in nd), []).append((n, p))
    out = []
    for (mul, no_decay), items in sorted(groups.items()):
        out.append(
            {
                "params": [p for _, p in items],
                "names": [n for n, _ in items],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_mul": lr_mul if mul else 1.0,
                "group": f"{'lr_mul' if mul else 'base'}/{'no_decay' if no_decay else 'decay'}",
            }
        )
    return out


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.AdamW:
    """AdamW from ``cfg.optim`` (TrainConfig): betas, eps, lr, weight decay, groups."""
    o = cfg.optim
    groups = param_groups(model, o.weight_decay, o.no_decay, o.lr_mul, o.lr_mul_prefix)
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps)
