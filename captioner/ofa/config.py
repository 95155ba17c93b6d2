"""OFA caption model configuration, read from a checkpoint's `cfg["model"]` and cross-checked with its weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

# OFA's ResNet options: blocks per stage for the three stages it keeps (no layer4). "resnet18" is OFA's
# bottleneck variant [2, 2, 2], not torchvision's basic-block ResNet-18.
RESNET_BLOCKS: dict[str, tuple[int, int, int]] = {
    "resnet18": (2, 2, 2),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}

# Flags the caption architecture needs; a checkpoint trained otherwise is a different model.
REQUIRED_FLAGS: dict[str, Any] = {
    "scale_attn": True,
    "scale_fc": True,
    "scale_heads": True,
    "scale_resids": False,
    "add_type_embedding": True,
    "layernorm_embedding": True,
    "patch_layernorm_embedding": True,
    "share_all_embeddings": True,
    "encoder_normalize_before": True,
    "decoder_normalize_before": True,
    "no_scale_embedding": True,
    "entangle_position_embedding": False,
    "activation_fn": "gelu",
}


class CheckpointConfigError(ValueError):
    """The checkpoint's arguments and weights disagree, or describe a model this module does not implement."""


@dataclasses.dataclass(frozen=True)
class OFAConfig:
    """Sizes of an OFA encoder-decoder; defaults are OFA-large with the caption fine-tuning flags."""

    embed_dim: int = 1024
    ffn_dim: int = 4096
    heads: int = 16
    encoder_layers: int = 12
    decoder_layers: int = 12
    resnet_type: str = "resnet152"
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    attn_scale_factor: float = 2.0
    max_positions: int = 1024
    patch_image_size: int = 480
    code_image_size: int = 128
    code_dict_size: int = 8192
    num_bins: int = 1000
    vocab_size: int = 59457

    def __post_init__(self) -> None:
        if self.resnet_type not in RESNET_BLOCKS:
            raise CheckpointConfigError(
                f"unsupported resnet_type {self.resnet_type!r}; known: {sorted(RESNET_BLOCKS)}"
            )
        if self.embed_dim % self.heads:
            raise CheckpointConfigError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")

    @property
    def resnet_blocks(self) -> tuple[int, int, int]:
        return RESNET_BLOCKS[self.resnet_type]

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    @property
    def image_grid(self) -> int:
        """Image tokens per side: the ResNet stem plus three stages downsample by 16."""
        return self.patch_image_size // 16


def large_config(**overrides: Any) -> OFAConfig:
    """The OFA-large caption configuration (473M parameters), optionally overridden."""
    return dataclasses.replace(OFAConfig(), **overrides)


def config_from_checkpoint(args: Any, state_dict: Mapping[str, torch.Tensor]) -> OFAConfig:
    """Build the config from the checkpoint's argparse Namespace (or dict) and check it against the weights."""
    a = vars(args) if not isinstance(args, Mapping) else dict(args)
    problems: list[str] = []
    for name, want in REQUIRED_FLAGS.items():
        got = a.get(name)
        if got is not None and got != want:
            problems.append(f"cfg.model.{name}={got!r} but the caption model needs {want!r}")
    if not a.get("disable_entangle", True):
        problems.append("cfg.model.disable_entangle=False (entangled positions) is not supported")
    for side in ("ffn_embed_dim", "attention_heads", "embed_dim"):
        enc, dec = a.get(f"encoder_{side}"), a.get(f"decoder_{side}")
        if enc is not None and dec is not None and enc != dec:
            problems.append(f"encoder_{side}={enc} differs from decoder_{side}={dec}")
    if problems:
        raise CheckpointConfigError(
            "checkpoint describes an unsupported OFA variant:\n  " + "\n  ".join(problems)
        )

    def need(name: str) -> Any:
        if name not in a:
            raise CheckpointConfigError(f"checkpoint cfg.model lacks {name!r}")
        return a[name]

    emb = state_dict.get("encoder.embed_tokens.weight")
    if emb is None:
        raise CheckpointConfigError("checkpoint has no 'encoder.embed_tokens.weight'")
    cfg = OFAConfig(
        embed_dim=int(need("encoder_embed_dim")),
        ffn_dim=int(need("encoder_ffn_embed_dim")),
        heads=int(need("encoder_attention_heads")),
        encoder_layers=int(need("encoder_layers")),
        decoder_layers=int(need("decoder_layers")),
        resnet_type=str(need("resnet_type")),
        token_bucket_size=int(need("token_bucket_size")),
        image_bucket_size=int(need("image_bucket_size")),
        attn_scale_factor=float(need("attn_scale_factor")),
        max_positions=int(need("max_source_positions")),
        patch_image_size=int(need("patch_image_size")),
        code_image_size=int(a.get("code_image_size", 128)),
        code_dict_size=int(a.get("code_dict_size", 8192)),
        num_bins=int(a.get("num_bins", 1000)),
        vocab_size=int(emb.shape[0]),
    )
    check_shapes(cfg, state_dict)
    return cfg


def check_shapes(cfg: OFAConfig, sd: Mapping[str, torch.Tensor]) -> None:
    """Cross-check the config with the weight shapes so a mismatch is a clear error, not a load failure."""
    d, h = cfg.embed_dim, cfg.heads
    expected = {
        "encoder.embed_tokens.weight": (cfg.vocab_size, d),
        "encoder.layers.0.fc1.weight": (cfg.ffn_dim, d),
        "encoder.token_rel_pos_table_list.0.weight": (2 * cfg.token_bucket_size - 1, h),
        "encoder.image_rel_pos_table_list.0.weight": ((2 * cfg.image_bucket_size - 1) ** 2 + 3, h),
        "encoder.embed_positions.weight": (cfg.max_positions + 2, d),
        "encoder.embed_image_positions.weight": (cfg.image_bucket_size**2 + 1, d),
        "encoder.image_proj.weight": (d, 1024),
        "decoder.layers.0.fc1.weight": (cfg.ffn_dim, d),
    }
    problems = []
    for key, shape in expected.items():
        t = sd.get(key)
        if t is None:
            problems.append(f"missing {key}")
        elif tuple(t.shape) != shape:
            problems.append(f"{key}: weights have shape {tuple(t.shape)}, cfg implies {shape}")

    def count(prefix: str) -> int:
        idx = {k[len(prefix) :].split(".", 1)[0] for k in sd if k.startswith(prefix)}
        return len({i for i in idx if i.isdigit()})

    for name, prefix, want in (
        ("encoder_layers", "encoder.layers.", cfg.encoder_layers),
        ("decoder_layers", "decoder.layers.", cfg.decoder_layers),
        ("resnet layer1 blocks", "encoder.embed_images.layer1.", cfg.resnet_blocks[0]),
        ("resnet layer2 blocks", "encoder.embed_images.layer2.", cfg.resnet_blocks[1]),
        ("resnet layer3 blocks", "encoder.embed_images.layer3.", cfg.resnet_blocks[2]),
    ):
        got = count(prefix)
        if got != want:
            problems.append(f"{name}: weights have {got}, cfg ({cfg.resnet_type}) implies {want}")
    if problems:
        raise CheckpointConfigError("checkpoint cfg and weights disagree:\n  " + "\n  ".join(problems))
