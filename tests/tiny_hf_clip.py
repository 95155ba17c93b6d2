"""A tiny random transformers `CLIPModel`: the reference side of the CLIP parity tests.

Test modules import it as `tiny_hf_clip`: tests/ has no __init__.py, so pytest puts tests/ on sys.path.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPConfig, CLIPModel


def random_hf_clip(
    text: dict[str, Any], vision: dict[str, Any], projection_dim: int, seed: int = 0
) -> CLIPModel:
    """`CLIPModel(CLIPConfig(text_config=text, vision_config=vision, ...))` seeded, in eval mode, with
    LayerNorm weights and biases moved off their 1/0 init so that parity tests really compare them."""
    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model
