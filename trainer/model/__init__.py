"""The network: CLIP-ViP (CLIP with video proxies and ViP attention), its towers and heads, its
configuration, loading/saving of weights, and the CLIP BPE tokenizer.

Submodules import each other by their full names, never through this package, so this file can
re-export the public API without closing an import circle.
"""

from trainer.model.clipvip import CLIPViP
from trainer.model.config import (
    PER_FRAME_HEADS,
    VIDEO_HEADS,
    ClipViPConfig,
    SeqTransfConfig,
    TextConfig,
    VisionConfig,
    tiny_config,
)
from trainer.model.weights import from_pretrained, load_pretrained, save_pretrained

__all__ = [
    "CLIPViP",
    "ClipViPConfig",
    "PER_FRAME_HEADS",
    "SeqTransfConfig",
    "TextConfig",
    "VIDEO_HEADS",
    "VisionConfig",
    "from_pretrained",
    "load_pretrained",
    "save_pretrained",
    "tiny_config",
]
