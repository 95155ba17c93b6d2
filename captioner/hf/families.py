"""The transformers caption families: each one's model class, prompt and generation settings, in one place.

Chosen by caption quality per compute (COCO Karpathy test CIDEr as published by each model's authors):
- Florence-2 (Microsoft, 2024; `florence-community/Florence-2-base` / `-large` converted for transformers):
  0.23B / 0.77B parameters, 768x768 input, CIDEr 133.0 / 135.6 zero-shot and 140.0 / 143.3 fine-tuned: the
  best captions per parameter of the native families; an encoder-decoder, so beams only run the small decoder.
- BLIP (Salesforce, 2022; `Salesforce/blip-image-captioning-base` / `-large`): 0.25B / 0.47B parameters, 384x384
  input, CIDEr 133.3 / 136.7 fine-tuned on COCO: the most widely used caption model of OFA's generation, COCO
  style like OFA's captions, a ViT encoder plus a BERT-sized decoder.
Left out: GIT (CIDEr 131.4 base, 144.8 at 0.7B but centre-crops at 224/384), BLIP-2 and PaliGemma (2.7B-3B:
~6-10x the compute for a few CIDEr points), SmolVLM/Idefics3 (chat models: image splitting makes the image
token count, so the cost, grow with the frame; captions are not COCO style).
"""

from __future__ import annotations

from typing import Any

from transformers import BlipForConditionalGeneration, Florence2ForConditionalGeneration

from captioner.hf.captioner import Family, Generation

BLIP_PROMPT = "a picture of"  # BLIP's COCO caption fine-tuning prompt; stripped from the output
FLORENCE2_TASK = "<CAPTION>"  # Florence-2's task token; its processor expands it to the sentence below
FLORENCE2_PROMPT = "What does the image describe?"


def blip_prompt_ids(tokenizer: Any, image_processor: Any) -> tuple[list[int], int]:
    """[CLS] a picture of [SEP]; BLIP's generate turns [CLS] into its BOS and drops [SEP], and echoes the rest."""
    ids = tokenizer(BLIP_PROMPT)["input_ids"]
    return ids, len(ids) - 1


def florence2_prompt_ids(tokenizer: Any, image_processor: Any) -> tuple[list[int], int]:
    """<image> x N, <s>, the task sentence, </s> (as Florence2Processor builds it); the decoder echoes nothing."""
    n = image_processor.image_seq_length
    text = tokenizer.image_token * n + tokenizer.bos_token + FLORENCE2_PROMPT + tokenizer.eos_token
    return tokenizer(text, add_special_tokens=False)["input_ids"], 0


BLIP = Family(
    name="blip",
    model_type="blip",
    model_class=BlipForConditionalGeneration,
    # BLIP's caption_coco settings: beam 3, max_length 20 / min_length 5 counted with the 4 prompt ids.
    generation=Generation(beam=3, max_new_tokens=16, min_new_tokens=1),
    prompt_ids=blip_prompt_ids,
)

FLORENCE2 = Family(
    name="florence2",
    model_type="florence2",
    model_class=Florence2ForConditionalGeneration,
    # The published generation_config (beam 3, no repeated trigrams); a caption is ~10-20 tokens.
    generation=Generation(beam=3, max_new_tokens=32, no_repeat_ngram=3),
    prompt_ids=florence2_prompt_ids,
)

FAMILIES = {f.name: f for f in (BLIP, FLORENCE2)}
