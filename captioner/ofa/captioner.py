"""The OFA captioner: images -> preprocessing -> batched beam search -> best hypothesis -> caption text."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from captioner.images import check_images
from captioner.ofa.generate import GenerationConfig, beam_search
from captioner.ofa.model import OFA
from captioner.ofa.preprocess import preprocess
from captioner.ofa.tokenizer import CAPTION_PROMPT, OFATokenizer, Tokenizer, caption_text, source_ids

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None -> fp16 on CUDA (what the official evaluation used), fp32 on CPU."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


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
        images = check_images(images)
        out: list[str] = []
        for i in range(0, len(images), self.batch_size):
            out.extend(self._caption_batch(images[i : i + self.batch_size]))
        return out

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
    ident = f"ofa({path.name},sha256={_sha256(path)[:12]},{str(dt).removeprefix('torch.')},beam={beam})"
    return OFACaptioner(model, tokenizer, ident, batch_size, gen)


def load_tiny_random(
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    batch_size: int = 16,
) -> OFACaptioner:
    """Seeded, untrained tiny OFA with a built-in word vocabulary: real code path, meaningless captions."""
    from captioner.ofa.tiny import tiny_random_model

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model, tokenizer = tiny_random_model(seed)
    return OFACaptioner(model.to(dev, dt), tokenizer, f"ofa-tiny-random(untrained,seed={seed})", batch_size)
