"""Statistics of the language-gap report beside the paper's NMI: a bootstrap confidence interval, a
K sweep and a second distance between the two text distributions (MMD), on the same features.

Why MMD and not the Fréchet distance or MAUVE (docs/ANALYSIS.md, "Gap report"):
- The unbiased MMD² estimate has expectation 0 when both sides come from one distribution, whatever
  n is, so pairs measured with different n per side stay comparable. The Fréchet distance fits a
  Gaussian per side and needs a D x D covariance: with n = 20..1000 texts and D = 384..512 it is
  rank-deficient and its bias grows as n shrinks.
- MAUVE quantises the features with k-means into many bins and needs thousands of samples per side to
  be stable; it would also be a new dependency.
- MMD comes with an exact permutation test, so a report can say whether a gap is there at all.

Kernel: Gaussian, exp(-|a - b|² / (2 s²)), with s the median pairwise distance among the *downstream*
texts of the draw. The ruler is the downstream set's own spread, so every source measured against the
same downstream set is measured with (nearly) the same bandwidth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000
K_SWEEP = (2, 4, 8)  # k = 2 is the paper's; larger k shows whether the split is a side split or a topic split
MMD_PERMUTATIONS = 200  # p-value resolution 1/201, on draw 0 only
# Model ids that say a model is untrained (ofa-tiny-random(untrained,...), tiny random test families) or
# is no model at all (noop). Outputs computed from them are labelled untrained.
UNTRAINED_PATTERN = re.compile(r"untrained|tiny-random|random-init|\bnoop\b", re.IGNORECASE)


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float

    def to_json(self) -> list[float]:
        return [self.lo, self.hi]


def bootstrap_ci(
    values: Sequence[float], level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> Interval | None:
    """Percentile bootstrap interval of the mean of `values` (the per-draw measurements).

    None with fewer than two values: one draw says nothing about the spread of the mean.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(lo), float(hi))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(y: np.ndarray) -> float:
    """Median pairwise Euclidean distance among the rows of y (off-diagonal); 1.0 if they all coincide."""
    y = np.asarray(y, dtype=np.float64)
    d = _sq_dists(y, y)[np.triu_indices(len(y), k=1)]
    s = float(np.sqrt(np.median(d))) if d.size else 0.0
    return s if s > 0 else 1.0


def _gram(x: np.ndarray, y: np.ndarray, bandwidth: float) -> np.ndarray:
    z = np.concatenate([x, y]).astype(np.float64)
    return np.exp(-_sq_dists(z, z) / (2.0 * bandwidth * bandwidth))


def _mmd2_from_gram(k: np.ndarray, side: np.ndarray) -> float:
    """Unbiased MMD² for the split `side` (bool, True = second sample) of the pooled Gram matrix.

    Block sums as quadratic forms (two matrix-vector products, no block copies), so a permutation
    costs O(N²) without allocating N² memory."""
    b = side.astype(np.float64)
    a = 1.0 - b
    m, n = a.sum(), b.sum()
    ka, kb = k @ a, k @ b
    diag = np.diag(k)
    sxx = a @ ka - diag @ a  # off-diagonal sum of the x block
    syy = b @ kb - diag @ b
    return float(sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * (a @ kb) / (m * n))


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased estimate of MMD² between the samples x [m, D] and y [n, D], Gaussian kernel."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least 2 samples per side")
    side = np.r_[np.zeros(len(x), bool), np.ones(len(y), bool)]
    return _mmd2_from_gram(_gram(x, y, bandwidth), side)


def mmd_permutation_p(
    x: np.ndarray, y: np.ndarray, bandwidth: float, permutations: int = MMD_PERMUTATIONS, seed: int = 0
) -> float:
    """p-value of "x and y come from one distribution": the share of random relabellings of the pooled
    sample whose MMD² is at least the observed one (the observed labelling counted, so p >= 1/(P+1))."""
    k = _gram(x, y, bandwidth)
    side = np.r_[np.zeros(len(x), bool), np.ones(len(y), bool)]
    observed = _mmd2_from_gram(k, side)
    rng = np.random.default_rng(seed)
    hits = sum(_mmd2_from_gram(k, rng.permutation(side)) >= observed for _ in range(permutations))
    return (hits + 1) / (permutations + 1)


@dataclass
class Summary:
    """Mean, sample std (ddof = 1) and bootstrap interval of per-draw values."""

    mean: float
    std: float
    ci: Interval | None
    runs: list[float]

    @classmethod
    def of(
        cls,
        runs: Iterable[float],
        seed: int = 0,
        level: float = CI_LEVEL,
        resamples: int = BOOTSTRAP_RESAMPLES,
    ) -> Summary:
        r = [float(v) for v in runs]
        arr = np.asarray(r)
        std = float(arr.std(ddof=1)) if len(r) > 1 else 0.0
        return cls(float(arr.mean()), std, bootstrap_ci(r, level, resamples, seed), r)


def untrained_ids(ids: Iterable[str]) -> list[str]:
    """The model ids among `ids` that name an untrained (or no) model."""
    return sorted({i for i in ids if i and UNTRAINED_PATTERN.search(i)})


def fmt_ci(ci: Interval | None, digits: int = 3) -> str:
    return "n/a" if ci is None else f"[{ci.lo:.{digits}f}, {ci.hi:.{digits}f}]"
