"""OCL loss variants against an independent explicit-loop formula (CLIPVIP.md §3), temperature clamp."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.config import LOSS_NAMES
from trainer.loop.losses import (
    LOGIT_SCALE_INIT,
    LOGIT_SCALE_MAX,
    clamp_logit_scale,
    contrastive_loss,
)

TOL = 1e-10  # float64 features all the way through


def _features(n: int = 5, d: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in "vscf":
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        out[k] = x / x.norm(dim=1, keepdim=True)
    return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(a[k]) * float(b[k]) for k in range(a.shape[0]))


def _ce(row: list[float], label: int) -> float:
    m = max(row)
    return -(row[label] - m - math.log(sum(math.exp(x - m) for x in row)))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _sym(a, b, scale, valid):
    """a->b and b->a, explicit: a query i (only if b_i exists) ranks existing b_j; b query i ranks all a_j."""
    n = a.shape[0]
    a2b, b2a = [], []
    for i in range(n):
        if not valid[i]:
            continue
        cols = [j for j in range(n) if valid[j]]
        a2b.append(_ce([scale * _dot(a[i], b[j]) for j in cols], cols.index(i)))
        b2a.append(_ce([scale * _dot(b[i], a[j]) for j in range(n)], i))
    return _mean(a2b), _mean(b2a)


def _reference(name: str, x: dict[str, torch.Tensor], scale: float, valid: list[bool]) -> float:
    v, s, c, f = x["v"], x["s"], x["c"], x["f"]
    n = v.shape[0]
    allv = [True] * n
    total = 0.0
    if name.startswith("vsc"):
        t2v = _mean([_ce([scale * _dot(s[i], v[j]) for j in range(n)], i) for i in range(n)])
        c2v = _mean([_ce([scale * _dot(c[i], v[j]) for j in range(n)], i) for i in range(n) if valid[i]])
        v2t, v2c = [], []
        for i in range(n):
            negs = [scale * _dot(v[i], s[j]) for j in range(n) if j != i]
            negs += [scale * _dot(v[i], c[j]) for j in range(n) if j != i and valid[j]]
            v2t.append(_ce([scale * _dot(v[i], s[i])] + negs, 0))
            if valid[i]:
                v2c.append(_ce([scale * _dot(v[i], c[i])] + negs, 0))
        total += t2v + c2v + _mean(v2t) + _mean(v2c)
    else:
        total += sum(_sym(v, s, scale, allv))
        if "vc" in name:
            total += sum(_sym(v, c, scale, valid))
    if name.endswith("fc"):
        total += sum(_sym(f, c, scale, valid))
    return total


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_matches_explicit_formula(name: str) -> None:
    x = _features()
    logit_scale = torch.tensor(LOGIT_SCALE_INIT, dtype=torch.float64)
    total, terms = contrastive_loss(name, x["v"], x["s"], x["c"], x["f"], logit_scale=logit_scale)
    ref = _reference(name, x, math.exp(LOGIT_SCALE_INIT), [True] * 5)
    assert abs(float(total) - ref) < TOL
    assert abs(float(sum(terms.values())) - float(total)) < TOL  # a SUM of the terms, not a mean
    expected_terms = {"vs": 2, "vs_fc": 4, "vs_vc": 4, "vs_vc_fc": 6, "vsc": 4, "vsc_fc": 6}[name]
    assert len(terms) == expected_terms


@pytest.mark.parametrize("name", ["vs_fc", "vs_vc", "vs_vc_fc", "vsc", "vsc_fc"])
def test_loss_missing_captions_match_explicit_formula(name: str) -> None:
    x = _features(n=6, seed=3)
    valid = [True, False, True, True, False, True]
    logit_scale = torch.tensor(2.0, dtype=torch.float64)
    total, _ = contrastive_loss(
        name, x["v"], x["s"], x["c"], x["f"], logit_scale=logit_scale, c_valid=torch.tensor(valid)
    )
    assert abs(float(total) - _reference(name, x, math.exp(2.0), valid)) < TOL


def test_all_captions_missing_reduces_vsc_to_vs() -> None:
    x = _features(n=4, seed=5)
    ls = torch.tensor(1.5, dtype=torch.float64)
    none = torch.zeros(4, dtype=torch.bool)
    total, terms = contrastive_loss("vsc_fc", x["v"], x["s"], x["c"], x["f"], logit_scale=ls, c_valid=none)
    vs, _ = contrastive_loss("vs", x["v"], x["s"], logit_scale=ls)
    assert abs(float(total) - float(vs)) < TOL
    assert all(torch.isfinite(t) for t in terms.values())


def test_loss_gradient_is_finite_with_masked_entries() -> None:
    x = {k: t.clone().requires_grad_(True) for k, t in _features(n=3).items()}
    ls = torch.tensor(LOGIT_SCALE_INIT, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([True, False, True])
    total, _ = contrastive_loss("vsc_fc", x["v"], x["s"], x["c"], x["f"], logit_scale=ls, c_valid=valid)
    total.backward()
    for t in [*x.values(), ls]:
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert float(x["c"].grad[1].abs().sum()) == 0.0  # a missing caption takes no part in the loss


def test_unknown_loss_and_missing_inputs_raise() -> None:
    x = _features()
    ls = torch.tensor(1.0)
    with pytest.raises(ValueError, match="unknown loss"):
        contrastive_loss("nope", x["v"], x["s"], logit_scale=ls)
    with pytest.raises(ValueError, match="needs caption"):
        contrastive_loss("vsc_fc", x["v"], x["s"], logit_scale=ls)
    with pytest.raises(ValueError, match="needs frame"):
        contrastive_loss("vs_fc", x["v"], x["s"], x["c"], logit_scale=ls)


def test_temperature_init_and_clamp() -> None:
    assert LOGIT_SCALE_INIT == 4.60
    p = torch.nn.Parameter(torch.tensor(7.0))
    clamp_logit_scale(p)
    assert p.item() == pytest.approx(math.log(200.0)) and p.exp().item() == pytest.approx(200.0)
    p.data.fill_(-1.0)
    clamp_logit_scale(p)
    assert p.item() == 0.0
    p.data.fill_(3.0)
    clamp_logit_scale(p)
    assert p.item() == 3.0
    assert LOGIT_SCALE_MAX == pytest.approx(5.298317366548036)
