"""The OFA captioner: images -> preprocessing -> batched beam search -> best hypothesis -> caption text."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from captioner.devices import dtype_name, resolve_device, resolve_dtype
from captioner.images import caption_in_batches
from captioner.ofa.checkpoint import checkpoint_args, read_checkpoint
from captioner.ofa.config import config_from_checkpoint
from captioner.ofa.generate import GenerationConfig, beam_search
from captioner.ofa.model import OFA
from captioner.ofa.preprocess import preprocess
from captioner.ofa.tiny import tiny_random_model
from captioner.ofa.tokenizer import CAPTION_PROMPT, OFATokenizer, Tokenizer, caption_text, source_ids


class OFACaptioner:
    """Captions images with an OFA model; `caption()` splits its input into batches of `batch_size`."""

    def __init__(
        self,
        model: OFA,
        tokenizer: Tokenizer,
        id: str,
        batch_size: int = 16,
        generation: GenerationConfig = GenerationConfig(),
        prompt: str = CAPTION_PROMPT,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if tokenizer.vocab_size != model.cfg.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} entries but the model's vocabulary is {model.cfg.vocab_size}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._id = id
        self.batch_size = batch_size
        self.generation = generation
        self.src = torch.tensor([source_ids(tokenizer, prompt)])

    @property
    def id(self) -> str:
        return self._id

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return caption_in_batches(images, self.batch_size, self._caption_batch)

    @torch.no_grad()
    def _caption_batch(self, images: list[np.ndarray]) -> list[str]:
        pixels = preprocess(images, self.model.cfg.patch_image_size, self.model.device)
        src = self.src.expand(len(images), -1)
        hyps = beam_search(self.model, src, pixels, None, self.generation)
        return [caption_text(self.tokenizer.decode(h[0].tokens.tolist())) for h in hyps]


def _sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_ofa(
    checkpoint: str | Path,
    bpe_dir: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 16,
    beam: int = 5,
    max_len: int = 16,
    no_repeat_ngram: int = 3,
) -> OFACaptioner:
    """The official OFA caption model from a local checkpoint (.pt/.pt.xz) and OFA's BPE directory."""
    path = Path(checkpoint)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    gen = GenerationConfig(beam=beam, max_len=max_len, no_repeat_ngram=no_repeat_ngram)
    model = OFA.from_checkpoint(path, dtype=dt, device=dev)
    tokenizer = OFATokenizer.from_dir(
        bpe_dir, model.cfg.code_dict_size, model.cfg.num_bins, model.cfg.vocab_size
    )
    ident = f"ofa({path.name},sha256={_sha256(path)[:12]},{dtype_name(dt)},beam={beam})"
    return OFACaptioner(model, tokenizer, ident, batch_size, gen)


def preflight_ofa(
    checkpoint: str | Path | None = None, bpe_dir: str | Path | None = None, **_: object
) -> int:
    """Refuse unusable files before any work, with one line: a missing, unreadable, unsafe or non-OFA
    checkpoint, or a BPE directory without OFA's files. Reads the checkpoint (memory-mapped for .pt; a .pt.xz
    is decompressed) but builds no model. Returns the model's input size (patch_image_size)."""
    if checkpoint is None or bpe_dir is None:
        raise ValueError("captioner 'ofa' needs --checkpoint and --bpe-dir (or use ofa-tiny-random)")
    if not Path(bpe_dir).is_dir():
        raise ValueError(f"BPE directory {str(bpe_dir)!r} does not exist or is not a directory")
    try:
        ckpt = read_checkpoint(checkpoint)
        cfg = config_from_checkpoint(checkpoint_args(ckpt), ckpt["model"])
        OFATokenizer.from_dir(bpe_dir, cfg.code_dict_size, cfg.num_bins, cfg.vocab_size)
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        raise ValueError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
    return cfg.patch_image_size


def load_tiny_random(
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    batch_size: int = 16,
    beam: int = 5,
    max_len: int = 16,
) -> OFACaptioner:
    """Seeded, untrained tiny OFA with a built-in word vocabulary: real code path, meaningless captions."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model, tokenizer = tiny_random_model(seed)
    gen = GenerationConfig(beam=beam, max_len=max_len)
    defaults = (beam, max_len) == (5, 16)  # the id of the default settings stays as it always was
    ident = (
        f"ofa-tiny-random(untrained,seed={seed}"
        + ("" if defaults else f",beam={beam},max_len={max_len}")
        + ")"
    )
    return OFACaptioner(model.to(dev, dt), tokenizer, ident, batch_size, gen)
