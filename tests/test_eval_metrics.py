"""Retrieval metrics and DSL against straightforward reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.eval.metrics import dsl, multi_caption_metrics, retrieval_metrics


def _reference(sim: np.ndarray) -> dict[str, float]:
    """Loop-based rank: 0-based count of other candidates scoring >= the ground truth (pessimistic ties)."""
    ranks = []
    for i in range(sim.shape[0]):
        ranks.append(sum(1 for j in range(sim.shape[1]) if j != i and sim[i, j] >= sim[i, i]))
    r = np.array(ranks, dtype=np.float64)
    return {
        "R1": 100 * float(np.mean(r < 1)),
        "R5": 100 * float(np.mean(r < 5)),
        "R10": 100 * float(np.mean(r < 10)),
        "MdR": float(np.median(r) + 1),
        "MnR": float(np.mean(r) + 1),
    }


@pytest.mark.parametrize("n", [1, 7, 50, 64])
def test_matches_reference_on_random_matrices(n: int) -> None:
    rng = np.random.default_rng(n)
    sim = rng.normal(size=(n, n))
    sim += np.eye(n) * rng.uniform(0, 2)  # some signal so R@K spans 0..100
    got = retrieval_metrics(sim)
    ref = _reference(sim)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k
    # also through torch float32 and for the transpose (v2t)
    got_t = retrieval_metrics(torch.tensor(sim.T, dtype=torch.float64))
    ref_t = _reference(sim.T)
    for k in ref_t:
        assert got_t[k] == pytest.approx(ref_t[k], abs=1e-9), k


def test_known_values() -> None:
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # rank 0
            [0.8, 0.5, 0.1],  # rank 1
            [0.9, 0.8, 0.3],  # rank 2
        ]
    )
    m = retrieval_metrics(sim)
    assert m["R1"] == pytest.approx(100 / 3)
    assert m["R5"] == 100.0
    assert m["MdR"] == 2.0
    assert m["MnR"] == 2.0


def test_ties_are_pessimistic_and_order_independent() -> None:
    constant = np.zeros((10, 10))
    m = retrieval_metrics(constant)
    assert m["R1"] == 0.0  # a constant model must not score
    assert m["MdR"] == 10.0 and m["MnR"] == 10.0
    # one tie with the ground truth: rank 1 whatever the tied column's position
    for j in (0, 2):
        sim = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
        sim[1, j] = 0.5
        assert retrieval_metrics(sim)["R1"] == pytest.approx(200 / 3)
    # permuting candidates together with their ground truth changes nothing
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 3, size=(20, 20)).astype(float)  # many ties
    perm = rng.permutation(20)
    assert retrieval_metrics(sim) == retrieval_metrics(sim[perm][:, perm])


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros(3))
    with pytest.raises(ValueError):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((3, 2)))


def test_dsl_matches_formula() -> None:
    rng = np.random.default_rng(1)
    sim = rng.uniform(-1, 1, size=(6, 5))
    got = dsl(torch.tensor(sim)).numpy()
    e = np.exp(100 * sim - (100 * sim).max(axis=0, keepdims=True))
    ref = sim * e / e.sum(axis=0, keepdims=True)  # softmax over the text axis (rows) per video column
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    # DSL columns: softmax weights over texts sum to one
    w = got / sim
    np.testing.assert_allclose(w.sum(axis=0), np.ones(5), rtol=1e-9)


def test_multi_caption_reduces_to_square_case() -> None:
    rng = np.random.default_rng(2)
    sim = rng.normal(size=(12, 12)) + np.eye(12)
    m = multi_caption_metrics(sim, list(range(12)))
    assert m["t2v"] == retrieval_metrics(sim)
    assert m["v2t"] == retrieval_metrics(sim.T)


def test_multi_caption_reference() -> None:
    rng = np.random.default_rng(3)
    n_videos = 9
    owner = np.concatenate([np.arange(n_videos), rng.integers(0, n_videos, size=20)])
    rng.shuffle(owner)
    sim = rng.normal(size=(owner.size, n_videos))
    m = multi_caption_metrics(sim, owner)
    # t2v: per caption
    t2v_r = [
        sum(1 for v in range(n_videos) if v != owner[c] and sim[c, v] >= sim[c, owner[c]])
        for c in range(owner.size)
    ]
    assert m["t2v"]["R1"] == pytest.approx(100 * np.mean(np.array(t2v_r) < 1))
    assert m["t2v"]["MnR"] == pytest.approx(np.mean(t2v_r) + 1)
    # v2t: a group scores the max over its captions
    group = np.array([[sim[owner == g, v].max() for v in range(n_videos)] for g in range(n_videos)])
    v2t_r = [
        sum(1 for g in range(n_videos) if g != v and group[g, v] >= group[v, v]) for v in range(n_videos)
    ]
    assert m["v2t"]["R5"] == pytest.approx(100 * np.mean(np.array(v2t_r) < 5))
    assert m["v2t"]["MdR"] == pytest.approx(np.median(v2t_r) + 1)
    with pytest.raises(ValueError, match="no caption"):
        multi_caption_metrics(np.zeros((2, 3)), [0, 1])
