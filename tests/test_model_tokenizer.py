"""CLIP BPE tokenizer: tiny tokenizer files in the real CLIP format, padding/truncation rules, and
agreement with transformers' CLIPTokenizer loading the same directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from trainer.model import CLIPViP, tiny_config  # noqa: E402
from trainer.model.config import TINY_VOCAB_SIZE  # noqa: E402
from trainer.model.tokenizer import (  # noqa: E402
    BOS_TOKEN,
    EOS_TOKEN,
    build_tiny_tokenizer,
    bytes_to_unicode,
    learn_bpe,
    load_clip_tokenizer,
)

TEXTS = [
    "A red circle moves left across the frame.",
    "a blue square bounces; the camera stays still",
    "Green triangle rotating slowly, then it stops!",
    "two people talk about cooking pasta in 3 minutes",
    "Café crème — naïve résumé 東京",
] * 3


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_tokenizer(TEXTS, tmp_path_factory.mktemp("tok"))


def test_files_follow_clip_layout(tok_dir: Path) -> None:
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    lines = (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    merges = [tuple(line.split(" ")) for line in lines[1:]]
    assert len(vocab) == TINY_VOCAB_SIZE == 512 + len(merges) + 2
    byte_chars = list(bytes_to_unicode().values())
    by_id = sorted(vocab, key=vocab.__getitem__)
    assert by_id[:256] == byte_chars
    assert by_id[256:512] == [c + "</w>" for c in byte_chars]
    assert by_id[512:-2] == [a + b for a, b in merges]
    assert by_id[-2:] == [BOS_TOKEN, EOS_TOKEN]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    # Frequent words of the corpus became single tokens.
    assert "the</w>" in vocab and "red</w>" in vocab


def test_padding_truncation_and_mask(tok_dir: Path) -> None:
    tok = load_clip_tokenizer(tok_dir)
    assert len(tok) == TINY_VOCAB_SIZE
    assert tok.bos_id == TINY_VOCAB_SIZE - 2 and tok.eot_id == tok.pad_id == TINY_VOCAB_SIZE - 1
    ids, mask = tok(
        ["a red circle", "a blue square bounces across the frame and then it stops"], max_length=8
    )
    assert ids.dtype == torch.long and ids.shape == mask.shape == (2, 8)
    n = int(mask[0].sum())
    assert ids[0, 0] == tok.bos_id and ids[0, n - 1] == tok.eot_id
    assert torch.all(ids[0, n:] == tok.eot_id) and torch.all(mask[0, n:] == 0)
    assert torch.all(mask[1] == 1) and ids[1, 0] == tok.bos_id and ids[1, -1] == tok.eot_id
    # The first EOT is where the text tower pools.
    assert int((ids[0] == tok.eot_id).int().argmax()) == n - 1


def test_empty_and_non_string_inputs(tok_dir: Path) -> None:
    tok = load_clip_tokenizer(tok_dir)
    ids, mask = tok([], max_length=6)
    assert ids.shape == mask.shape == (0, 6)
    ids, mask = tok([""], max_length=6)
    assert ids[0, :2].tolist() == [tok.bos_id, tok.eot_id] and mask[0].tolist() == [1, 1, 0, 0, 0, 0]
    with pytest.raises(TypeError, match="item 1"):
        tok(["ok", None], max_length=6)  # type: ignore[list-item]


def test_round_trip_and_unicode(tok_dir: Path) -> None:
    tok = load_clip_tokenizer(tok_dir)
    for text in ["a red circle moves left", "Naïve café 東京", "zebra quokka"]:
        ids = tok.encode(text)
        assert all(0 <= i < TINY_VOCAB_SIZE - 2 for i in ids)
        assert tok.decode(ids) == text.lower()
    # CLIP splits digits and punctuation into separate words, so decoding spaces them out.
    assert tok.decode(tok.encode("42!")) == "4 2 !"


def test_transformers_reads_the_same_files(tok_dir: Path) -> None:
    from transformers import CLIPTokenizer

    hf = CLIPTokenizer.from_pretrained(str(tok_dir))
    assert len(hf) == TINY_VOCAB_SIZE
    tok = load_clip_tokenizer(tok_dir)
    texts = ["Green triangle rotating", "two people talk about cooking pasta"]
    enc = hf(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    ids, mask = tok(texts, max_length=16)
    assert torch.equal(ids, enc["input_ids"]) and torch.equal(mask, enc["attention_mask"])


def test_tiny_model_accepts_tokenizer_output(tok_dir: Path) -> None:
    tok = load_clip_tokenizer(tok_dir)
    torch.manual_seed(0)
    model = CLIPViP(tiny_config(text_vocab=len(tok))).eval()
    assert model.config.text.eos_token_id == tok.eot_id
    ids, mask = tok(TEXTS[:3], max_length=model.config.text.context_length)
    with torch.no_grad():
        out = model.encode_text(ids, mask)
    assert out.shape == (3, 32) and torch.isfinite(out).all()


def test_learn_bpe_is_deterministic_and_fills_up() -> None:
    a = learn_bpe(["aa bb"], 40)
    assert a == learn_bpe(["aa bb"], 40) and len(a) == 40 and len(set(a)) == 40
    assert a[0] in {("a", "a</w>"), ("b", "b</w>")}


def test_bad_tokenizer_dirs(tmp_path: Path, tok_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_clip_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="expected 49408"):
        load_clip_tokenizer(tok_dir, expected_size=49408)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    (bad / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="merges imply"):
        load_clip_tokenizer(bad)
