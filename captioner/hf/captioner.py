"""One captioner for every transformers-native family: images -> the family's image processor -> one batched
`generate` over the batch (the same prompt for every image, so no padding) -> text.

A family (captioner/hf/families.py) says which model class, prompt and generation settings it uses; this
module holds what they share: loading from a local Hugging Face model directory, device and dtype, batching,
the checks a job runs before it starts any work (`preflight`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedModel

from captioner.devices import dtype_name, resolve_device, resolve_dtype
from captioner.images import caption_in_batches, check_images

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class Generation:
    """Decoding settings passed to `generate` (deterministic: no sampling)."""

    beam: int
    max_new_tokens: int
    min_new_tokens: int = 0
    no_repeat_ngram: int = 0

    def kwargs(self) -> dict[str, Any]:
        return {
            "do_sample": False,
            "num_beams": self.beam,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "no_repeat_ngram_size": self.no_repeat_ngram,
        }


@dataclass(frozen=True)
class Family:
    """What differs between transformers caption families; everything else is shared."""

    name: str  # registry name
    model_type: str  # config.json's model_type a model directory must have
    model_class: type[PreTrainedModel]  # a transformers *ForConditionalGeneration class
    generation: Generation
    # (tokenizer, image processor) -> (prompt ids fed to generate, how many leading output ids echo the prompt)
    prompt_ids: Callable[[Any, Any], tuple[list[int], int]]


def input_size(image_processor: Any) -> int | None:
    """N when the processor starts by squashing to N x N with PIL bicubic (then `captioner.images.squash(x, N)`
    done early gives the same pixels); None when it crops or keeps the aspect ratio."""
    size = getattr(image_processor, "size", None) or {}
    h, w = size.get("height"), size.get("width")
    resample = getattr(image_processor, "resample", None)
    if (
        getattr(image_processor, "do_resize", False)
        and h is not None
        and h == w
        and int(resample if resample is not None else -1) == int(Image.Resampling.BICUBIC)
        and not getattr(image_processor, "do_center_crop", False)
    ):
        return int(h)
    return None


class HFCaptioner:
    """Captions images with a transformers caption model; `caption()` splits its input into batches."""

    def __init__(
        self,
        family: Family,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        id: str,
        batch_size: int = 16,
        generation: Generation | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.family = family
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self._id = id
        self.batch_size = batch_size
        self.generation = generation or family.generation
        ids, self.echo = family.prompt_ids(tokenizer, image_processor)
        self.prompt = torch.tensor([ids])
        self.input_size = input_size(image_processor)

    @property
    def id(self) -> str:
        return self._id

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        """The family's own preprocessing: validated uint8 RGB -> pixel_values [B, 3, H, W] on the model."""
        checked = check_images(images)
        # Said explicitly: the processor guesses the channel axis, and guesses wrong for e.g. a 3 x W x 3 frame.
        pixels = self.image_processor(images=checked, input_data_format="channels_last", return_tensors="pt")
        return pixels["pixel_values"].to(self.model.device, self.model.dtype)

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return caption_in_batches(images, self.batch_size, self.caption_batch)

    @torch.no_grad()
    def generate(self, images: list[np.ndarray]) -> torch.Tensor:
        """Output token ids of one batch (prompt echo included), as `generate` returns them."""
        pixels = self.prepare(images)
        ids = self.prompt.repeat(len(images), 1).to(self.model.device)  # BLIP writes into it
        return self.model.generate(
            pixel_values=pixels,
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            **self.generation.kwargs(),
        )

    def caption_batch(self, images: list[np.ndarray]) -> list[str]:
        seqs = self.generate(images)[:, self.echo :]
        return [t.strip() for t in self.tokenizer.batch_decode(seqs, skip_special_tokens=True)]


def overrides(generation: Generation, beam: int | None, max_len: int | None) -> Generation:
    """The family's settings with the user's --beam / --max-len (new tokens) applied."""
    for name, value in (("beam", beam), ("max_len", max_len)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    changed: dict[str, int] = {}
    if beam is not None:
        changed["beam"] = beam
    if max_len is not None:
        changed["max_new_tokens"] = max_len
        changed["min_new_tokens"] = min(generation.min_new_tokens, max_len)
    return replace(generation, **changed)


def ident(name: str, detail: str, dtype: torch.dtype, generation: Generation) -> str:
    return f"{name}({detail},{dtype_name(dtype)},beam={generation.beam},max_len={generation.max_new_tokens})"


def check_model_dir(family: Family, model_dir: str | Path | None) -> Path:
    """Refuse, with one line, a model directory that cannot hold this family's model (no weights read)."""
    if model_dir is None:
        raise ValueError(f"captioner {family.name!r} needs a model directory (--model-dir)")
    path = Path(model_dir)
    if not path.is_dir():
        raise ValueError(f"model directory {str(path)!r} does not exist or is not a directory")
    config = path / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {config}: {e}") from None
    if model_type != family.model_type:
        raise ValueError(
            f"{config} has model_type {model_type!r}; captioner {family.name!r} needs {family.model_type!r}"
        )
    weights = [path / f for f in WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        raise ValueError(f"no weights in {path} (expected one of {', '.join(WEIGHT_FILES)})")
    try:
        with weights[0].open("rb") as f:
            if not f.read(8):
                raise ValueError(f"weights file {weights[0]} is empty")
    except OSError as e:
        raise ValueError(f"cannot read weights file {weights[0]}: {e}") from None
    return path


def load_processors(family: Family, path: Path) -> tuple[Any, Any]:
    """The family's tokenizer and image processor from the model directory; always the PIL image backend, so the
    pixels (and the squash contract) do not depend on whether torchvision is installed."""
    try:
        image_processor = AutoImageProcessor.from_pretrained(path, backend="pil", local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load the tokenizer / image processor of {path}: {first}") from None
    return tokenizer, image_processor


def preflight(family: Family, model_dir: str | Path | None = None, **_: Any) -> int | None:
    """Everything a job must know before it starts: the directory is usable; returns the stated input size."""
    path = check_model_dir(family, model_dir)
    _, image_processor = load_processors(family, path)
    return input_size(image_processor)


def load(
    family: Family,
    model_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 16,
    beam: int | None = None,
    max_len: int | None = None,
) -> HFCaptioner:
    """A family's caption model from a local Hugging Face model directory (no download, no remote code)."""
    path = check_model_dir(family, model_dir)
    tokenizer, image_processor = load_processors(family, path)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    gen = overrides(family.generation, beam, max_len)
    model: Any = family.model_class.from_pretrained(path, dtype=dt, local_files_only=True)
    model.to(dev)
    return HFCaptioner(
        family, model, image_processor, tokenizer, ident(family.name, path.name, dt, gen), batch_size, gen
    )
