"""Numerical parity with the OFA reference (golden fixtures produced by the OFA-Sys code on fairseq).

Tolerances from tests/fixtures/ofa/tiny_config.json (recommended_test_tolerances): encoder output, logits,
scores and positional scores atol 1e-5; hypothesis tokens exact (the smallest gap between competing candidate
scores in the fixture is 4.4e-4, far above our ~4e-6 error, so the beams cannot legitimately reorder).
"""

from __future__ import annotations

import pytest
import torch
from ofa_fixtures import CKPT, load_golden

from captioner.ofa import OFA, GenerationConfig, Hypothesis, beam_search
from captioner.ofa.checkpoint import read_checkpoint
from captioner.ofa.positions import decoder_image_position_idx, image_buckets, token_buckets

ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> OFA:
    return OFA.from_checkpoint(CKPT, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def gold() -> dict:
    return load_golden()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def test_bucket_tables_equal_stored_buffers() -> None:
    sd = read_checkpoint(CKPT)["model"]
    for side in ("encoder", "decoder"):
        assert torch.equal(token_buckets(16), sd[f"{side}.token_rp_bucket"])
        assert torch.equal(image_buckets(8), sd[f"{side}.image_rp_bucket"])
    assert torch.equal(decoder_image_position_idx(64, 8), sd["decoder.image_position_idx"])


def test_encoder_output_and_positions(model: OFA, gold: dict) -> None:
    inp = gold["inputs"]
    with torch.no_grad():
        enc = model.encode(inp["src_tokens"], inp["patch_images"], inp["patch_masks"])
    assert _max_diff(enc.x, gold["encoder"]["encoder_out"].transpose(0, 1)) <= ATOL
    assert torch.equal(enc.padding_mask, gold["encoder"]["encoder_padding_mask"])
    ref_pos = gold["encoder"]["position_embeddings"]
    assert _max_diff(enc.pos.expand_as(ref_pos), ref_pos) <= ATOL


def test_decoder_logits(model: OFA, gold: dict) -> None:
    inp = gold["inputs"]
    with torch.no_grad():
        logits = model(inp["src_tokens"], inp["patch_images"], inp["prev_output_tokens"], inp["patch_masks"])
    assert _max_diff(logits, gold["decoder"]["logits"]) <= ATOL


def test_padded_encoder_and_logits(model: OFA, gold: dict) -> None:
    p = gold["padded"]
    with torch.no_grad():
        enc = model.encode(p["src_tokens"], p["patch_images"], p["patch_masks"])
        logits = model(p["src_tokens"], p["patch_images"], p["prev_output_tokens"], p["patch_masks"])
    assert enc.padding_mask.any(), "the padded case must exercise key padding"
    assert torch.equal(enc.padding_mask, p["encoder_padding_mask"])
    assert _max_diff(enc.x, p["encoder_out"].transpose(0, 1)) <= ATOL
    assert _max_diff(logits, p["logits"]) <= ATOL


def _assert_hypotheses_match(got: list[list[Hypothesis]], ref: list[list[dict]]) -> None:
    assert len(got) == len(ref)
    for s, (hyps, refs) in enumerate(zip(got, ref)):
        assert len(hyps) == len(refs) == 5
        for r, (h, g) in enumerate(zip(hyps, refs)):
            assert h.tokens.tolist() == g["tokens"], f"sample {s} rank {r}"
            assert abs(h.score - g["score"]) <= ATOL, f"sample {s} rank {r}"
            assert _max_diff(h.positional_scores, torch.tensor(g["positional_scores"])) <= ATOL


def _run(model: OFA, src: dict, ngram: int, use_cache: bool) -> list[list[Hypothesis]]:
    cfg = GenerationConfig(beam=5, max_len=16, min_len=1, no_repeat_ngram=ngram, use_cache=use_cache)
    return beam_search(model, src["src_tokens"], src["patch_images"], src["patch_masks"], cfg)


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv-cache", "recompute"])
@pytest.mark.parametrize("case", ["ngram3", "ngram0", "padded"])
def test_generation_matches_reference(model: OFA, gold: dict, case: str, use_cache: bool) -> None:
    if case == "padded":
        got = _run(model, gold["padded"], 3, use_cache)
        ref = gold["padded"]["generate_ngram3"]
    else:
        got = _run(model, gold["inputs"], 3 if case == "ngram3" else 0, use_cache)
        ref = gold[f"generate_{case}"]
    _assert_hypotheses_match(got, ref)


def test_ngram_blocking_changes_every_hypothesis(gold: dict) -> None:
    # Guards the fixture itself: both runs differ everywhere, so a broken blocker cannot pass both.
    for s in range(3):
        for r in range(5):
            assert gold["generate_ngram3"][s][r]["tokens"] != gold["generate_ngram0"][s][r]["tokens"]


def test_duplicate_sample_and_batch_independence(model: OFA, gold: dict) -> None:
    inp = gold["inputs"]
    batched = _run(model, inp, 3, True)
    dup = inp["duplicate_of"].index(0, 1)  # sample 2 is a copy of sample 0
    assert [h.tokens.tolist() for h in batched[dup]] == [h.tokens.tolist() for h in batched[0]]
    for i in range(3):
        one = {k: inp[k][i : i + 1] for k in ("src_tokens", "patch_images", "patch_masks")}
        single = _run(model, one, 3, True)[0]
        assert [h.tokens.tolist() for h in single] == [h.tokens.tolist() for h in batched[i]]
        for a, b in zip(single, batched[i]):
            assert abs(a.score - b.score) <= ATOL


def test_contract_generate_signature(model: OFA, gold: dict) -> None:
    """CONTRACTS section 4: OFA.generate returns per sample (tokens, score) best first."""
    inp = gold["inputs"]
    out = model.generate(inp["src_tokens"], inp["patch_images"], inp["patch_masks"])
    ref = gold["generate_ngram3"]
    assert len(out) == 3
    for s in range(3):
        assert [t.tolist() for t, _ in out[s]] == [h["tokens"] for h in ref[s]]
        assert [sc for _, sc in out[s]] == sorted((sc for _, sc in out[s]), reverse=True)
        assert all(t[-1].item() == 2 and t[0].item() != 0 for t, _ in out[s])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_path_runs_and_stays_close(gold: dict, dtype: torch.dtype) -> None:
    """The reduced-precision code path (masks, caches, casts) that CUDA uses, exercised on CPU.

    Beams may legitimately reorder at near-ties in half precision, so only where a hypothesis has the same
    tokens as the reference is its score compared (fp16/bf16 rounding: atol 1e-2).
    """
    model = OFA.from_checkpoint(CKPT, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    got = _run(model, gold["inputs"], 3, True)
    same = 0
    for hyps, refs in zip(got, gold["generate_ngram3"]):
        assert len(hyps) == 5
        for h, g in zip(hyps, refs):
            assert h.tokens[-1].item() == 2 and torch.isfinite(h.positional_scores).all()
            if h.tokens.tolist() == g["tokens"]:
                same += 1
                assert abs(h.score - g["score"]) <= 1e-2
    assert same >= 5, f"only {same} of 15 hypotheses agree with the fp32 reference"
