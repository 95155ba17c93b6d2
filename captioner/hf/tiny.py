"""Seeded, untrained tiny models of each transformers family, built from the family's config class, with a
tokenizer and image processor built in memory (no download, no files): the real code path with meaningless
captions, for tests and the demo. The word list is the tiny OFA's, so tiny captions look alike."""

from __future__ import annotations

from typing import Any

import torch
from transformers import BartTokenizer, BertTokenizer, BlipConfig, Florence2Config
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from captioner.devices import resolve_device, resolve_dtype
from captioner.hf.captioner import Family, Generation, HFCaptioner, ident, overrides
from captioner.hf.families import BLIP, BLIP_PROMPT, FLORENCE2, FLORENCE2_PROMPT
from captioner.ofa.tokenizer import TINY_WORDS

INIT_STD = 0.2  # 10x the families' default: an untrained model whose output depends on the image
BLIP_SIZE = 32  # input side (4x4 patches of 8)
FLORENCE2_SIZE = 64  # input side (DaViT strides 4*2*2*2 = 32 -> 2x2 tokens + 1 pooled token)

_WORDS = sorted({*TINY_WORDS, *BLIP_PROMPT.split(), *FLORENCE2_PROMPT.lower().rstrip("?").split()} - {"?"})


def tiny_bert_tokenizer() -> BertTokenizer:
    """BLIP's tokenizer layout (BERT WordPiece, [DEC] as BOS) over the tiny word list plus single letters."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({*_WORDS, *letters, "?"}), "[DEC]"]
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, bos_token="[DEC]")


def tiny_bart_tokenizer() -> BartTokenizer:
    """Florence-2's tokenizer layout (byte-level BPE, <s> <pad> </s> <unk>, <image>): the byte symbols of printable
    ASCII (other bytes become <unk>; untrained captions stay readable) plus merges that make each tiny word one
    token."""
    byte_symbols = [bytes_to_unicode()[b] for b in range(0x20, 0x7F)]
    vocab = ["<s>", "<pad>", "</s>", "<unk>", *byte_symbols]
    known = set(vocab)
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        prev = "\u0120"  # the byte-level symbol of a leading space
        for ch in word:
            if prev + ch not in known:
                known.add(prev + ch)
                vocab.append(prev + ch)
                merges.append((prev, ch))
            prev += ch
    vocab += ["<mask>", "<image>"]
    return BartTokenizer(
        vocab={t: i for i, t in enumerate(vocab)},
        merges=merges,  # type: ignore[arg-type]  # the tokenizers backend takes pairs; the hint says str
        extra_special_tokens={"image_token": "<image>"},
    )


def _small(**extra: Any) -> dict[str, Any]:
    return dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=64, **extra)


def tiny_blip(seed: int = 0) -> tuple[Any, Any, Any]:
    tok = tiny_bert_tokenizer()
    ids = tok.get_vocab()
    cfg = BlipConfig(
        text_config=_small(
            vocab_size=len(ids),
            max_position_embeddings=64,
            encoder_hidden_size=32,
            bos_token_id=ids["[DEC]"],
            sep_token_id=ids["[SEP]"],
            eos_token_id=ids["[SEP]"],
            pad_token_id=ids["[PAD]"],
            initializer_range=INIT_STD,
        ),
        vision_config=_small(image_size=BLIP_SIZE, patch_size=8, initializer_range=INIT_STD),
        projection_dim=32,
        initializer_range=INIT_STD,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BLIP.model_class(cfg)
    return model.eval(), tok, BlipImageProcessorPil(size={"height": BLIP_SIZE, "width": BLIP_SIZE})


def tiny_florence2(seed: int = 0) -> tuple[Any, Any, Any]:
    tok = tiny_bart_tokenizer()
    ids = tok.get_vocab()
    cfg = Florence2Config(
        vision_config=dict(
            depths=[1, 1, 1, 1],
            embed_dim=[8, 16, 24, 32],
            num_heads=[1, 2, 2, 4],
            num_groups=[1, 2, 2, 4],
            window_size=2,
            projection_dim=32,
            drop_path_rate=0.0,
            max_position_embeddings=8,
            initializer_range=INIT_STD,
        ),
        text_config=dict(
            vocab_size=len(ids),
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
            bos_token_id=ids["<s>"],
            pad_token_id=ids["<pad>"],
            eos_token_id=ids["</s>"],
            decoder_start_token_id=ids["</s>"],
            forced_bos_token_id=ids["<s>"],
            forced_eos_token_id=ids["</s>"],
            init_std=INIT_STD,
        ),
        image_token_id=ids["<image>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FLORENCE2.model_class(cfg)
    side = {"height": FLORENCE2_SIZE, "width": FLORENCE2_SIZE}
    processor = CLIPImageProcessorPil(
        size=side,
        crop_size=side,
        do_center_crop=False,
        resample=3,  # bicubic
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        image_seq_length=(FLORENCE2_SIZE // 32) ** 2 + 1,
    )
    return model.eval(), tok, processor


TINY = {BLIP.name: tiny_blip, FLORENCE2.name: tiny_florence2}


def load_tiny(
    family: Family,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    batch_size: int = 16,
    beam: int | None = None,
    max_len: int | None = None,
) -> HFCaptioner:
    """`<family>-tiny-random`: the family's captioner around a seeded tiny model (same seed, same weights)."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    gen: Generation = overrides(family.generation, beam, max_len)
    model, tokenizer, image_processor = TINY[family.name](seed)
    name = f"{family.name}-tiny-random"
    cid = ident(name, f"untrained,seed={seed}", dt, gen)
    return HFCaptioner(family, model.to(dev, dt), image_processor, tokenizer, cid, batch_size, gen)
