"""Architecture configuration of the CLIP-ViP model (one place for every default).

The field names are ours; `trainer.model.weights` maps them to and from Hugging Face `CLIPConfig` keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

VIDEO_HEADS = ("vip", "full", "meanpool", "seqtransf", "clip2video")
# Heads that encode each frame as an image (T=1 through the tower) and pool per-frame features.
PER_FRAME_HEADS = ("meanpool", "seqtransf", "clip2video")
# VidCLIP overwrites CLIP's logit scale with this value (log space, exp(4.6) ~ 100).
VIDCLIP_LOGIT_SCALE = 4.60
# Tiny tokenizer/model vocabulary: 256 bytes + 256 bytes</w> + merges + 2 specials.
TINY_VOCAB_SIZE = 768


@dataclass
class VisionConfig:
    width: int = 768
    layers: int = 12
    heads: int = 12
    patch: int = 32
    image_size: int = 224
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    attention_dropout: float = 0.0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


@dataclass
class TextConfig:
    vocab: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    context_length: int = 77
    intermediate_size: int = 2048
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    attention_dropout: float = 0.0
    bos_token_id: int = 49406
    # HF CLIP pools at input_ids.argmax(-1) when eos_token_id == 2 (old hub configs), else at the first eos.
    eos_token_id: int = 49407
    pad_token_id: int = 49407


@dataclass
class SeqTransfConfig:
    """CLIP4Clip seqTransf head: frame position table + small transformer over frame features."""

    layers: int = 4
    heads: int = 0  # 0 -> projection_dim // 64 (CLIP4Clip's rule), at least 1
    max_frames: int = 77  # CLIP4Clip copies the text position table (length 77) into this


@dataclass
class ClipViPConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    projection_dim: int = 512
    num_proxies: int = 3  # only used by the "vip" and "full" heads
    num_frames: int = 12  # length of the temporal embedding table (interpolated for other T)
    video_head: str = "vip"
    logit_scale_init: float = VIDCLIP_LOGIT_SCALE
    seqtransf: SeqTransfConfig = field(default_factory=SeqTransfConfig)
    clip2video: dict[str, Any] = field(default_factory=dict)  # extra kwargs for CLIP2VideoHead

    def __post_init__(self) -> None:
        if self.video_head not in VIDEO_HEADS:
            raise ValueError(f"video_head must be one of {VIDEO_HEADS}, got {self.video_head!r}")
        if self.num_proxies < 0:
            raise ValueError(f"num_proxies must be >= 0, got {self.num_proxies}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        for name, sub in (("vision", self.vision), ("text", self.text)):
            if sub.width % sub.heads:
                raise ValueError(f"{name}.width {sub.width} is not divisible by {name}.heads {sub.heads}")
        if self.vision.image_size % self.vision.patch:
            raise ValueError(
                f"image_size {self.vision.image_size} not divisible by patch {self.vision.patch}"
            )

    @property
    def per_frame(self) -> bool:
        return self.video_head in PER_FRAME_HEADS

    @property
    def effective_num_proxies(self) -> int:
        """Proxies exist only when the tower sees the whole video at once."""
        return 0 if self.per_frame else self.num_proxies

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipViPConfig:
        d = dict(d)
        vision = VisionConfig(**d.pop("vision", {}))
        text = TextConfig(**d.pop("text", {}))
        seqtransf = SeqTransfConfig(**d.pop("seqtransf", {}))
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ClipViPConfig keys: {sorted(unknown)}")
        return cls(vision=vision, text=text, seqtransf=seqtransf, **d)


def tiny_config(**overrides: Any) -> ClipViPConfig:
    """A tiny random model for tests and the demo (CPU, seconds).

    Overrides: any top-level ClipViPConfig field, plus `vision_<field>` / `text_<field>` for the towers
    (e.g. `text_vocab=len(tokenizer)`, `vision_image_size=64`).
    """
    vision = VisionConfig(width=64, layers=2, heads=4, patch=16, image_size=64, intermediate_size=128)
    text = TextConfig(
        vocab=TINY_VOCAB_SIZE,
        width=64,
        layers=2,
        heads=4,
        context_length=32,
        intermediate_size=128,
        bos_token_id=TINY_VOCAB_SIZE - 2,
        eos_token_id=TINY_VOCAB_SIZE - 1,
        pad_token_id=TINY_VOCAB_SIZE - 1,
    )
    vis_over = {k[len("vision_") :]: v for k, v in overrides.items() if k.startswith("vision_")}
    txt_over = {k[len("text_") :]: v for k, v in overrides.items() if k.startswith("text_")}
    top = {k: v for k, v in overrides.items() if not k.startswith(("vision_", "text_"))}
    if "vocab" in txt_over:
        # Specials sit at the end of a CLIP vocabulary; keep ids consistent with the tokenizer.
        v = txt_over["vocab"]
        txt_over.setdefault("bos_token_id", v - 2)
        txt_over.setdefault("eos_token_id", v - 1)
        txt_over.setdefault("pad_token_id", v - 1)
    return ClipViPConfig(
        vision=replace(vision, **vis_over),
        text=replace(text, **txt_over),
        **{"projection_dim": 32, **top},
    )
