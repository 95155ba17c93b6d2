"""OFA-large architecture shape, and beam-search rules that the golden fixture does not exercise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captioner.ofa import OFA, GenerationConfig, beam_search, count_parameters, large_config
from captioner.ofa.generate import ban_repeated_ngrams
from captioner.ofa.interface import EOS, PAD
from captioner.ofa.tiny import tiny_random_model

TSV = Path(__file__).parent / "fixtures" / "ofa" / "ofa_large_caption_state_dict.tsv"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_large_model_matches_official_state_dict_exactly() -> None:
    lines = TSV.read_text().splitlines()
    assert lines[0].split("\t") == ["key", "shape", "dtype", "numel", "kind"]
    total = lines[-1].split("\t")
    assert total[0] == "total_parameters"
    rows = [line.split("\t") for line in lines[1:-1]]
    with torch.device("meta"):
        model = OFA(large_config())
    sd = model.state_dict()
    assert list(sd) == [r[0] for r in rows]
    for key, shape, dtype, numel, _kind in rows:
        assert str(list(sd[key].shape)) == shape, key
        assert str(sd[key].dtype) == f"torch.{dtype}", key
        assert sd[key].numel() == int(numel), key
    assert count_parameters(model) == int(total[1]) == 472_977_152
    buffers = {k for k, _ in model.named_buffers()}
    assert buffers == {r[0] for r in rows if r[4] == "buffer"}


def test_ngram_blocking_reference_case() -> None:
    # OFA.md section 7: tokens 0 5 6 5 6 at step 4 with n=3 must ban exactly {5}.
    tokens = torch.tensor([[0, 5, 6, 5, 6, 1]])
    lp = torch.zeros(1, 10)
    ban_repeated_ngrams(lp, tokens, step=4, n=3)
    assert torch.isinf(lp[0]).nonzero().flatten().tolist() == [5]
    lp = torch.zeros(1, 10)
    ban_repeated_ngrams(lp, tokens, step=4, n=0)
    assert not torch.isinf(lp).any()
    lp = torch.zeros(1, 10)  # bigrams: (6 -> 5) occurred, so after "... 6" token 5 is banned
    ban_repeated_ngrams(lp, tokens, step=4, n=2)
    assert torch.isinf(lp[0]).nonzero().flatten().tolist() == [5]


def test_ngram_blocking_counts_the_leading_bos() -> None:
    tokens = torch.tensor([[0, 0, 7, 0, 0]])  # "0 0" occurred at the start (bos included) followed by 7
    lp = torch.zeros(1, 10)
    ban_repeated_ngrams(lp, tokens, step=4, n=3)
    assert torch.isinf(lp[0]).nonzero().flatten().tolist() == [7]


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_random_model(0)
    torch.manual_seed(1)
    return (
        model,
        torch.tensor([[0, *tok.encode(" what does the image describe?"), 2]]),
        torch.randn(2, 3, 96, 96),
    )


def _eos_favouring(model: OFA):
    """A copy whose output bias strongly favours EOS at every step (to exercise min_len)."""
    m, _ = tiny_random_model(0)
    with torch.no_grad():
        m.decoder.layer_norm.weight.zero_()
        m.decoder.layer_norm.bias.copy_(m.encoder.embed_tokens.weight[EOS])
    return m


def test_min_len_bans_eos_and_max_len_forces_it(tiny) -> None:
    model, src, px = tiny
    m = _eos_favouring(model)
    src2 = src.expand(2, -1)
    free = beam_search(m, src2, px, None, GenerationConfig(min_len=0))
    assert free[0][0].tokens.tolist() == [EOS], "EOS dominates when allowed at step 0"
    for min_len in (1, 3):
        hyps = beam_search(m, src2, px, None, GenerationConfig(min_len=min_len))
        assert all(len(h.tokens) >= min_len + 1 for s in hyps for h in s)
    hyps = beam_search(model, src2, px, None, GenerationConfig(max_len=4, no_repeat_ngram=0))
    for s in hyps:
        assert len(s) == 5
        assert all(len(h.tokens) <= 5 and h.tokens[-1].item() == EOS for h in s)
        assert all(PAD not in h.tokens.tolist() for h in s)


def test_scores_are_length_normalised_positional_sums(tiny) -> None:
    model, src, px = tiny
    for lenpen in (1.0, 0.5):
        for s in beam_search(model, src.expand(2, -1), px, None, GenerationConfig(lenpen=lenpen)):
            scores = [h.score for h in s]
            assert scores == sorted(scores, reverse=True)
            for h in s:
                expected = h.positional_scores.sum().item() / len(h.tokens) ** lenpen
                assert h.score == pytest.approx(expected, abs=1e-5)


def test_kv_cache_equals_recompute_and_batch_equals_single(tiny) -> None:
    model, src, px = tiny
    cached = beam_search(model, src.expand(2, -1), px, None, GenerationConfig(use_cache=True))
    recomputed = beam_search(model, src.expand(2, -1), px, None, GenerationConfig(use_cache=False))
    for a, b in zip(cached, recomputed):
        assert [h.tokens.tolist() for h in a] == [h.tokens.tolist() for h in b]
        assert max(abs(x.score - y.score) for x, y in zip(a, b)) <= 1e-5
    for i in range(2):
        single = beam_search(model, src, px[i : i + 1], None, GenerationConfig())[0]
        assert [h.tokens.tolist() for h in single] == [h.tokens.tolist() for h in cached[i]]


def test_batch_reduction_when_samples_finish_at_different_steps() -> None:
    model, tok = tiny_random_model(0)
    with torch.no_grad():  # nudge towards EOS so that images finish at different steps
        model.decoder.layer_norm.bias.add_(model.encoder.embed_tokens.weight[EOS] * 0.15)
    src = torch.tensor([[0, *tok.encode(" what does the image describe?"), 2]] * 6)
    torch.manual_seed(0)
    px = torch.randn(6, 3, 96, 96) * torch.linspace(0.2, 3, 6)[:, None, None, None]
    gen = GenerationConfig(max_len=30)
    batched = beam_search(model, src, px, None, gen)
    lengths = [max(len(h.tokens) for h in s) for s in batched]
    assert len(set(lengths)) > 2 and min(lengths) < 31, lengths  # some leave the batch early, others go on
    for i in range(6):
        single = beam_search(model, src[i : i + 1], px[i : i + 1], None, gen)[0]
        assert [h.tokens.tolist() for h in single] == [h.tokens.tolist() for h in batched[i]]
        assert max(abs(a.score - b.score) for a, b in zip(single, batched[i])) <= 1e-5
    recomputed = beam_search(model, src, px, None, GenerationConfig(max_len=30, use_cache=False))
    assert [[h.tokens.tolist() for h in s] for s in recomputed] == [
        [h.tokens.tolist() for h in s] for s in batched
    ]


def test_invalid_generation_settings() -> None:
    model, _ = tiny_random_model(0)
    with pytest.raises(ValueError, match="invalid generation settings"):
        beam_search(model, torch.tensor([[0, 2]]), torch.zeros(1, 3, 96, 96), None, GenerationConfig(beam=0))


def test_patch_mask_false_hides_the_image(tiny) -> None:
    model, src, px = tiny
    with torch.no_grad():
        enc = model.encode(src.expand(2, -1), px, torch.tensor([True, False]))
    assert not enc.padding_mask[0].any()
    assert enc.padding_mask[1, :36].all() and not enc.padding_mask[1, 36:].any()
    hidden = beam_search(model, src.expand(2, -1), px, torch.tensor([False, False]), GenerationConfig())
    assert [h.tokens.tolist() for h in hidden[0]] == [h.tokens.tolist() for h in hidden[1]]
