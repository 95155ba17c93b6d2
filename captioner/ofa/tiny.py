"""A seeded, untrained tiny OFA for demos and tests: the full caption architecture at toy sizes."""

from __future__ import annotations

import torch

from captioner.ofa.config import OFAConfig
from captioner.ofa.model import OFA
from captioner.ofa.tokenizer import TinyTokenizer

TINY_CODES, TINY_BINS = 8, 8


def tiny_config(vocab_size: int) -> OFAConfig:
    """Same shapes as the golden tiny checkpoint: every caption-model feature on, 3.6M parameters."""
    return OFAConfig(
        embed_dim=32,
        ffn_dim=64,
        heads=4,
        encoder_layers=2,
        decoder_layers=2,
        resnet_type="resnet18",
        token_bucket_size=16,
        image_bucket_size=8,
        patch_image_size=96,
        code_image_size=64,
        code_dict_size=TINY_CODES,
        num_bins=TINY_BINS,
        vocab_size=vocab_size,
    )


def tiny_random_model(seed: int = 0) -> tuple[OFA, TinyTokenizer]:
    """Model and matching tokenizer; the same seed always gives the same weights (global RNG untouched)."""
    tokenizer = TinyTokenizer(TINY_CODES, TINY_BINS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OFA(tiny_config(tokenizer.vocab_size))
        with torch.no_grad():
            # OFA zero-initialises the relative-position tables and sets c_attn to 1; perturb them so every
            # term of the attention bias (and the per-head gains) actually takes part.
            # He-initialised convolutions (as torchvision's ResNet) keep image features from fading, so
            # different images give different captions even untrained.
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            for name, p in model.named_parameters():
                if "rel_pos_table" in name:
                    p.normal_(0.0, 0.5)
                elif name.endswith("c_attn"):
                    p.uniform_(0.5, 1.5)
    return model.eval(), tokenizer
