"""Shared checks of the transformers caption families (imported by tests/test_captioner_<family>.py).

Test modules import it as `hf_caption_parity`: tests/ has no __init__.py, so pytest puts tests/ on sys.path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import captioner
from captioner.hf.captioner import HFCaptioner
from captioner.images import squash

# Mixed sizes in one batch, among them frames a channel-axis guess would misread (1 x 1 x 3, 3 x W x 3).
SIZES = [(240, 320), (64, 64), (37, 500), (720, 1280), (1, 1), (3, 40), (481, 479), (32, 32)]


def images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _trim(row: torch.Tensor, pad: int) -> list[int]:
    ids = row.tolist()
    while ids and ids[-1] == pad:
        ids.pop()
    return ids


def assert_batch_matches_single(name: str, reference_inputs: Callable[[Any, Any], Any], beam: int) -> None:
    """All SIZES in one batch through our path == transformers' processor + generate on each image alone."""
    cap = captioner.load(name, beam=beam, batch_size=len(SIZES))
    assert isinstance(cap, HFCaptioner) and "untrained" in cap.id and f"beam={beam}" in cap.id
    ims = images()
    batch = cap.generate(ims)
    pad = cap.model.generation_config.pad_token_id
    texts = []
    for i, im in enumerate(ims):
        inputs = reference_inputs(cap, im)
        with torch.no_grad():
            ref = cap.model.generate(**inputs, **cap.generation.kwargs())[0]
        assert _trim(batch[i], pad) == _trim(ref, pad), f"image {i} ({im.shape}): tokens differ"
        texts.append(cap.tokenizer.decode(ref[cap.echo :], skip_special_tokens=True).strip())
    assert cap.caption(ims) == texts
    assert len(set(texts)) >= 3, texts  # the captions depend on the image, so a mix-up would show
    # Split into batches of 2 (the last one short): still the same captions.
    assert captioner.load(name, beam=beam, batch_size=2).caption(ims) == texts


def assert_squash_is_lossless(name: str) -> None:
    """The stated input size is what the family squashes to first: squashing early changes no pixel."""
    cap = captioner.load(name)
    assert isinstance(cap, HFCaptioner)
    size = cap.input_size
    assert size is not None and captioner.preflight(name) == size
    ims = images(1)
    early = [squash(im, size) for im in ims]
    assert torch.equal(cap.prepare(ims), cap.prepare(early))


def assert_model_dir_roundtrip(family: str, tmp_path: Path) -> None:
    """The tiny model saved as a Hugging Face directory loads by family name, with the same captions; broken
    directories are refused by the preflight with one line."""
    tiny = captioner.load(f"{family}-tiny-random")
    assert isinstance(tiny, HFCaptioner)
    d = tmp_path / "model"
    tiny.model.save_pretrained(d)
    tiny.tokenizer.save_pretrained(d)
    tiny.image_processor.save_pretrained(d)
    assert captioner.preflight(family, model_dir=str(d)) == tiny.input_size
    loaded = captioner.load(family, model_dir=d, device="cpu", dtype="float32")
    assert loaded.id == f"{family}(model,float32,beam=3,max_len={tiny.generation.max_new_tokens})"
    ims = images(2)
    assert loaded.caption(ims) == tiny.caption(ims)

    def refused(match: str, model_dir: Any) -> None:
        with pytest.raises(ValueError, match=match) as e:
            captioner.preflight(family, model_dir=model_dir)
        assert "\n" not in str(e.value)

    refused("needs a model directory", None)
    refused("does not exist", tmp_path / "absent")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    refused("has model_type 'bert'", d)
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes(b"")
    refused("is empty", d)
    (d / "model.safetensors").unlink()
    refused("no weights", d)
    with pytest.raises(ValueError, match="does not take checkpoint"):
        captioner.preflight(family, model_dir=d, checkpoint="x.pt")
