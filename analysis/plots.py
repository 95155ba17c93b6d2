"""Figures for the NMI analysis: PCA of one draw's mixed features per pair, and a bar chart of the table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DrawView:
    """One pair's first draw: features [2n, D], source labels (0 = src, 1 = tgt), cluster ids."""

    src: str
    tgt: str
    feats: np.ndarray
    labels: np.ndarray
    clusters: np.ndarray
    nmi: float


@dataclass
class Bar:
    src: str
    tgt: str
    mean: float
    std: float


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows onto the top two principal components (SVD of the centred data)."""
    from threadpoolctl import threadpool_limits

    xc = x - x.mean(0, keepdims=True)
    # One BLAS thread: a 2000 x 512 SVD is small, and multi-threaded OpenBLAS measured 15x slower
    # (1.1 s vs 0.07 s) on a busy 2-core machine.
    with threadpool_limits(1):
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:2].T


def plot_nmi(path: Path, draws: Sequence[DrawView], bars: Sequence[Bar], title: str) -> Path:
    """One PNG: a PCA panel per pair (colour = true source, marker = k-means cluster), then the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cols = min(4, max(1, len(draws)))
    rows = math.ceil(len(draws) / cols) if draws else 0
    fig = plt.figure(figsize=(4 * cols, 3.6 * rows + 3.6), constrained_layout=True)
    grid = fig.add_gridspec(rows + 1, cols)
    for i, d in enumerate(draws):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        xy = pca_2d(d.feats)
        for label, colour in ((0, "tab:orange"), (1, "tab:blue")):
            for cluster, marker in ((0, "o"), (1, "x")):
                m = (d.labels == label) & (d.clusters == cluster)
                ax.scatter(xy[m, 0], xy[m, 1], s=8, c=colour, marker=marker, alpha=0.6, linewidths=0.8)
        handles = [
            Line2D([], [], ls="", marker="s", color="tab:orange", label=d.src),
            Line2D([], [], ls="", marker="s", color="tab:blue", label=d.tgt),
            Line2D([], [], ls="", marker="o", color="grey", label="cluster 0"),
            Line2D([], [], ls="", marker="x", color="grey", label="cluster 1"),
        ]
        ax.set_title(f"{d.src} vs {d.tgt} (draw 0 NMI {d.nmi:.3f})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(handles=handles, fontsize=7, loc="best")
    ax = fig.add_subplot(grid[rows, :])
    tgts = list(dict.fromkeys(b.tgt for b in bars))
    srcs = list(dict.fromkeys(b.src for b in bars))
    width = 0.8 / max(1, len(tgts))
    for j, tgt in enumerate(tgts):
        vals = {b.src: b for b in bars if b.tgt == tgt}
        xs = [i + j * width for i, s in enumerate(srcs) if s in vals]
        ax.bar(
            xs,
            [vals[s].mean for s in srcs if s in vals],
            width,
            yerr=[vals[s].std for s in srcs if s in vals],
            capsize=3,
            label=tgt,
        )
    ax.set_xticks([i + width * (len(tgts) - 1) / 2 for i in range(len(srcs))], srcs)
    ax.set_ylabel("NMI (higher = larger gap)")
    ax.set_ylim(0, 1)
    ax.legend(title="downstream")
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
