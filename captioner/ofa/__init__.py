"""Plain-PyTorch OFA caption inference (no fairseq): model, safe checkpoint loading, tokenizer, beam search."""

from captioner.ofa.config import CheckpointConfigError, OFAConfig, large_config
from captioner.ofa.generate import GenerationConfig, Hypothesis, beam_search
from captioner.ofa.model import OFA, count_parameters

__all__ = [
    "OFA",
    "CheckpointConfigError",
    "GenerationConfig",
    "Hypothesis",
    "OFAConfig",
    "beam_search",
    "count_parameters",
    "large_config",
]
