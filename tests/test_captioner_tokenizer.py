"""Tokenizer: GPT-2 BPE + OFA dictionary against OFA's own encode/decode facts, and the tiny vocabulary.

The GPT-2 BPE files are third-party data that users bring with the checkpoint, so they are not in the repo:
these tests read them from ../shared/ofa/bpe next to the clone and skip when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ofa_fixtures import BPE_DIR, FIXTURES, load_golden, needs_bpe

from captioner.ofa.tokenizer import CAPTION_PROMPT, OFATokenizer, TinyTokenizer, caption_text, source_ids


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    return OFATokenizer.from_dir(BPE_DIR)


@pytest.fixture(scope="module")
def facts() -> dict:
    return json.loads((FIXTURES / "tokenization_facts.json").read_text())


@needs_bpe
def test_dictionary_layout(tok: OFATokenizer, facts: dict) -> None:
    d = facts["dictionary"]
    assert tok.vocab_size == d["size"] == 59457
    for name, (idx, symbol) in d["specials"].items():
        assert tok.symbols[idx] == symbol, name
    for entry in d["first_bpe_entries"]:
        assert tok.symbols[entry["dictionary_id"]] == entry["symbol"]
        assert tok.bpe.decoder[int(entry["symbol"])] == entry["gpt2_piece"]


@needs_bpe
def test_caption_prompt_ids(tok: OFATokenizer, facts: dict) -> None:
    assert facts["prompt"]["text"] == CAPTION_PROMPT
    assert source_ids(tok) == facts["prompt"]["source_ids"] == [0, 99, 473, 5, 2274, 6190, 116, 2]


@needs_bpe
def test_example_captions_round_trip(tok: OFATokenizer, facts: dict) -> None:
    for ex in facts["examples"]:
        assert tok.bpe.encode(ex["text"]) == ex["gpt2_bpe_ids"]
        assert [tok.bpe.decoder[i] for i in ex["gpt2_bpe_ids"]] == ex["gpt2_pieces"]
        assert tok.encode(ex["text"]) == ex["dictionary_ids"]
        decoded = tok.decode(ex["hypothesis_tokens"])
        assert decoded == ex["decoded"]
        assert caption_text(decoded) == ex["decoded_eval_caption"]


@needs_bpe
def test_golden_hypotheses_decode_like_ofa(tok: OFATokenizer) -> None:
    gold = load_golden()
    assert source_ids(tok, gold["inputs"]["src_text"]) == gold["inputs"]["src_tokens"][0].tolist()
    for run in ("generate_ngram3", "generate_ngram0"):
        for sample in gold[run]:
            for h in sample:
                assert (
                    max(h["tokens"]) < 300
                )  # tiny ids below 300 mean the same tokens as the full dictionary
                assert tok.decode(h["tokens"]) == h["decoded"]
                assert caption_text(tok.decode(h["tokens"])) == h["caption"]


@needs_bpe
def test_non_text_ids_are_dropped(tok: OFATokenizer) -> None:
    a_man = tok.encode(" a man")
    noise = [0, 1, 2, 3, 50261, 50264, 50265, 58456, 58457, 59456]  # specials, placeholder, mask, codes, bins
    assert tok.decode([noise[0], a_man[0], *noise[1:], a_man[1], 2]) == " a man"


@needs_bpe
def test_unicode_and_whitespace_round_trip(tok: OFATokenizer) -> None:
    for text in [" café — naïve 東京 ", "  two  spaces\nnewline", " it's 3.14 dollars!"]:
        assert tok.decode(tok.encode(text)) == text


@needs_bpe
def test_dictionary_fitted_to_the_model_vocabulary() -> None:
    full = OFATokenizer.from_dir(BPE_DIR, vocab_size=59457)
    assert full.vocab_size == 59457
    tiny = OFATokenizer.from_dir(
        BPE_DIR, code_dict_size=8, num_bins=8, vocab_size=317
    )  # the golden tiny model
    assert (
        tiny.vocab_size == 317 and tiny.symbols[:300] == full.symbols[:300] and tiny.symbols[300] == "<mask>"
    )
    with pytest.raises(ValueError, match="does not fit"):
        OFATokenizer.from_dir(BPE_DIR, vocab_size=60000)


def test_missing_bpe_files_are_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"vocab\.bpe, dict\.txt"):
        OFATokenizer.from_dir(tmp_path)


def test_caption_text_strips_punctuation() -> None:
    assert (
        caption_text(" A red double-decker bus, next to a building.")
        == "A red doubledecker bus next to a building"
    )


def test_tiny_tokenizer_prompt_and_round_trip() -> None:
    tt = TinyTokenizer()
    ids = source_ids(tt)
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids, "the prompt is fully in the tiny vocabulary"
    assert tt.decode(ids) == CAPTION_PROMPT
    assert tt.decode(tt.encode(" a dog riding a bike")) == " a dog riding a bike"
    assert tt.encode(" zebra") == [3]  # unknown word -> <unk>, dropped when decoding
    assert tt.vocab_size == len(tt.symbols)
    assert tt.symbols[-1] == "<bin_7>" and tt.symbols[tt.vocab_size - 17] == "<mask>"
