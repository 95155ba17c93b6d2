"""Figures for the gap analysis: PCA of one draw's mixed features per pair, and bars of the table.

One colour meaning per figure: a colour is always a downstream dataset (its points in the PCA panels,
its bars in the chart); the pretraining side is always dark grey, and markers are k-means clusters.
Bars are horizontal, one row per (source, downstream) pair, and the figure grows with the number of
sources, so 15+ sources stay readable.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SOURCE_COLOUR = "0.25"  # the pretraining side in every PCA panel
TARGET_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")
BAR_ROW_INCHES = 0.32


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
    n: int = 0  # texts per side
    ci: list[float] | None = None  # [lo, hi]; the error bar when given, else +- std


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows onto the top two principal components (SVD of the centred data)."""
    from threadpoolctl import threadpool_limits

    xc = x - x.mean(0, keepdims=True)
    # One BLAS thread: a 2000 x 512 SVD is small, and multi-threaded OpenBLAS measured 15x slower
    # (1.1 s vs 0.07 s) on a busy 2-core machine.
    with threadpool_limits(1):
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:2].T


def target_colours(tgts: Sequence[str]) -> dict[str, str]:
    names = list(dict.fromkeys(tgts))
    return {t: TARGET_COLOURS[i % len(TARGET_COLOURS)] for i, t in enumerate(names)}


def _pca_panel(ax: Axes, d: DrawView, colour: str) -> None:
    from matplotlib.lines import Line2D

    xy = pca_2d(d.feats)
    n = int((d.labels == 0).sum())
    for label, c in ((0, SOURCE_COLOUR), (1, colour)):
        for cluster, marker in ((0, "o"), (1, "x")):
            m = (d.labels == label) & (d.clusters == cluster)
            ax.scatter(xy[m, 0], xy[m, 1], s=8, c=c, marker=marker, alpha=0.6, linewidths=0.8)
    handles = [
        Line2D([], [], ls="", marker="s", color=SOURCE_COLOUR, label=d.src),
        Line2D([], [], ls="", marker="s", color=colour, label=d.tgt),
        Line2D([], [], ls="", marker="o", color="0.6", label="cluster 0"),
        Line2D([], [], ls="", marker="x", color="0.6", label="cluster 1"),
    ]
    ax.set_title(f"{d.src} vs {d.tgt}\ndraw 0: NMI {d.nmi:.3f}, n={n}/side", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(handles=handles, fontsize=6, loc="best")


def _bar_panel(ax: Axes, bars: Sequence[Bar], colours: dict[str, str], xlabel: str) -> None:
    srcs = list(dict.fromkeys(b.src for b in bars))
    tgts = list(dict.fromkeys(b.tgt for b in bars))
    height = 0.8 / max(1, len(tgts))
    for j, tgt in enumerate(tgts):
        group = {b.src: b for b in bars if b.tgt == tgt}
        rows = [(i, group[s]) for i, s in enumerate(srcs) if s in group]
        ys = [i + j * height for i, _ in rows]
        means = [b.mean for _, b in rows]
        err = np.array(
            [[b.mean - b.ci[0], b.ci[1] - b.mean] if b.ci else [b.std, b.std] for _, b in rows]
        ).T.clip(min=0)
        ax.barh(ys, means, height, xerr=err, capsize=2, color=colours[tgt], label=tgt)
        for y, (_, b), hi in zip(ys, rows, np.asarray(means) + err[1]):
            ax.text(max(hi, 0) + 0.01, y, f"{b.mean:.3f} (n={b.n})", va="center", fontsize=7)
    ax.set_yticks([i + height * (len(tgts) - 1) / 2 for i in range(len(srcs))], srcs, fontsize=8)
    ax.invert_yaxis()  # first source on top, as in the table
    ax.set_xlim(0, 1.2)
    ax.set_xlabel(xlabel)
    ax.legend(title="downstream", fontsize=7, loc="lower right")


def nmi_figure(draws: Sequence[DrawView], bars: Sequence[Bar], title: str) -> Figure:
    """A PCA panel per pair (grey = pretraining texts, colour = downstream set, marker = cluster), then
    horizontal bars of mean NMI with their interval (colour = downstream set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = target_colours([b.tgt for b in bars] + [d.tgt for d in draws])
    cols = min(4, max(1, len(draws)))
    rows = math.ceil(len(draws) / cols) if draws else 0
    bar_h = max(2.5, BAR_ROW_INCHES * len(bars) + 1.2)
    fig = plt.figure(figsize=(4 * cols, 3.4 * rows + bar_h + 0.8), constrained_layout=True)
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[3.4] * rows + [bar_h])
    for i, d in enumerate(draws):
        _pca_panel(fig.add_subplot(grid[i // cols, i % cols]), d, colours[d.tgt])
    any_ci = any(b.ci for b in bars)
    xlabel = "NMI (higher = larger gap); error bar: " + ("bootstrap CI of the mean" if any_ci else "+- std")
    _bar_panel(fig.add_subplot(grid[rows, :]), bars, colours, xlabel)
    fig.suptitle(title, fontsize=9)
    return fig


def save(fig: Figure, path: Path, dpi: int = 110) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_nmi(path: Path, draws: Sequence[DrawView], bars: Sequence[Bar], title: str) -> Path:
    return save(nmi_figure(draws, bars, title), path)


@dataclass
class Interval:
    """A measured value with its interval and sample size, as the comparison plots it."""

    mean: float
    ci: list[float] | None
    n: int


@dataclass
class CompareView:
    """What the comparison figure shows, per captioner label (colour = captioner in every panel)."""

    labels: list[str]
    targets: list[str]
    nmi: dict[tuple[str, str], Interval]  # (label, target) -> NMI k=2
    mmd: dict[tuple[str, str], Interval]  # (label, target) -> MMD^2
    lengths: dict[str, list[int]]  # words per caption
    distinct: dict[str, tuple[float, float]]  # distinct-1, distinct-2
    scores: dict[str, dict[str, float]]  # label -> {"BLEU-4": .., "CIDEr-D": ..} (empty: no references)
    images_per_s: dict[str, float | None]
    machine: str
    names: dict[str, str]  # label -> legend text, e.g. "ofa (untrained)"


def _grouped(
    ax: Axes,
    groups: list[str],
    view: CompareView,
    colours: dict[str, str],
    value: Callable[[str, str], Interval | None],
) -> None:
    """Bars grouped on the x axis by `groups`, one bar per captioner, n per side written at the foot
    of each bar that has one, error bars where an interval is known."""
    labels = view.labels
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        got = [(i + j * width, v) for i, g in enumerate(groups) if (v := value(label, g)) is not None]
        xs, ys = [x for x, _ in got], [v.mean for _, v in got]
        err = None
        if any(v.ci for _, v in got):
            err = np.clip([[v.mean - v.ci[0] if v.ci else 0 for _, v in got],
                           [v.ci[1] - v.mean if v.ci else 0 for _, v in got]], 0, None)  # fmt: skip
        ax.bar(xs, ys, width, yerr=err, capsize=3, color=colours[label], label=view.names[label])
        for x, (_, v) in zip(xs, got):
            if v.n:
                ax.annotate(f"n={v.n}", (x, 0), textcoords="offset points", xytext=(0, 3), ha="center",
                            fontsize=7, color="white")  # fmt: skip
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(groups))], groups, fontsize=8)


def plot_compare(path: Path, view: CompareView, title: str) -> Path:
    """Six panels: NMI (k=2, bootstrap CI), MMD², caption length, distinct-1/2, BLEU-4/CIDEr-D against
    references, captioner images/s. Colour = captioner throughout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {label: TARGET_COLOURS[i % len(TARGET_COLOURS)] for i, label in enumerate(view.labels)}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), constrained_layout=True)
    a = axes.ravel()
    _grouped(a[0], view.targets, view, colours, lambda lab, t: view.nmi.get((lab, t)))
    a[0].set(title="NMI k=2 vs downstream (higher = larger gap)", ylim=(0, 1.1))
    _grouped(a[1], view.targets, view, colours, lambda lab, t: view.mmd.get((lab, t)))
    a[1].set(title="MMD² vs downstream (Gaussian kernel)")
    top = max([max(v, default=0) for v in view.lengths.values()], default=0) + 1
    for label in view.labels:
        a[2].hist(view.lengths[label], bins=np.arange(0, top + 1) - 0.5, histtype="step", lw=1.5,
                  color=colours[label], label=view.names[label])  # fmt: skip
    a[2].set(title="caption length", xlabel="words", ylabel="captions")
    metrics = ["distinct-1", "distinct-2"]
    _grouped(a[3], metrics, view, colours,
             lambda lab, m: Interval(view.distinct[lab][metrics.index(m)], None, 0))  # fmt: skip
    a[3].set(title="vocabulary (distinct n-grams / all n-grams)", ylim=(0, 1.05))
    if any(view.scores.values()):
        names = ["BLEU-4", "CIDEr-D"]
        _grouped(a[4], names, view, colours,
                 lambda lab, m: Interval(view.scores[lab][m], None, 0) if view.scores[lab] else None)  # fmt: skip
        a[4].set(title="against reference captions")
    else:
        a[4].text(0.5, 0.5, "no reference captions given (--refs)", ha="center", va="center")
        a[4].set(title="against reference captions", xticks=[], yticks=[])
    speeds = [(lab, view.images_per_s[lab]) for lab in view.labels if view.images_per_s[lab]]
    bars = a[5].bar(
        [lab for lab, _ in speeds], [v for _, v in speeds], color=[colours[lab] for lab, _ in speeds]
    )
    a[5].bar_label(bars, fmt="%.1f", fontsize=8)
    a[5].set_title("captioner images/s (measured in the job)")
    a[5].set_xlabel(textwrap.fill(view.machine, 90), fontsize=7)
    a[0].legend(title="captioner", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save(fig, path, dpi=100)
