"""Florence-2 through the captioner registry: our batched path against transformers' own Florence2Processor +
generate on one image at a time, token for token (greedy and beam), on a seeded tiny random Florence-2."""

from __future__ import annotations

import pytest
from hf_caption_parity import (
    assert_batch_matches_single,
    assert_model_dir_roundtrip,
    assert_squash_is_lossless,
)
from PIL import Image
from transformers import Florence2Processor

from captioner.hf.families import FLORENCE2_TASK

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_inputs(cap, image):  # noqa: ANN001, ANN201 - test helper
    processor = Florence2Processor(image_processor=cap.image_processor, tokenizer=cap.tokenizer)
    return processor(images=Image.fromarray(image), text=FLORENCE2_TASK, return_tensors="pt")


@pytest.mark.parametrize("beam", [1, 3])
def test_batched_equals_transformers_generate_per_image(beam: int) -> None:
    assert_batch_matches_single("florence2-tiny-random", reference_inputs, beam)


def test_loads_from_a_model_directory(tmp_path) -> None:  # noqa: ANN001
    assert_model_dir_roundtrip("florence2", tmp_path)


def test_early_squash_to_the_stated_input_size_is_lossless() -> None:
    assert_squash_is_lossless("florence2-tiny-random")
