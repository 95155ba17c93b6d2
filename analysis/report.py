"""What a gap measurement prints and writes: the table (paper layout plus one detail line per pair),
the CSV, the JSON header fields and the figure title, with n per side everywhere and one warning row
when a pair drew fewer texts than requested."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from analysis.gap import CI_LEVEL, untrained_ids
from analysis.plots import Bar, DrawView, plot_nmi

LABELS = {
    "hdvila_sub": "HD-VILA_sub",
    "hdvila_cap": "HD-VILA_cap",
    "webvid": "WebVid",
    "coco": "COCO",
    "cc12m": "CC12M",
    "cc3m": "CC3M",
    "msrvtt": "MSR-VTT",
    "didemo": "DiDeMo",
}
UNTRAINED_NOTE = "numbers show the tool works, not the real gap"


@dataclass
class PairResult:
    src: str
    tgt: str
    encoder: str
    samples: int  # texts per side actually drawn (n per side)
    repeats: int
    seed: int
    nmi_mean: float
    nmi_std: float
    nmi_runs: list[float]
    encoder_id: str = ""
    samples_requested: int = 0
    kmeans: str = ""
    src_texts: int = 0  # usable texts in each source file
    tgt_texts: int = 0
    ci_level: float = CI_LEVEL
    nmi_ci: list[float] | None = None  # percentile bootstrap of the mean over draws; None for one draw
    k_sweep: list[dict] = field(default_factory=list)  # [{k, nmi_mean, nmi_std, nmi_ci, nmi_runs}]
    mmd2_mean: float = 0.0  # unbiased MMD^2, Gaussian kernel (analysis/gap.py)
    mmd2_std: float = 0.0
    mmd2_ci: list[float] | None = None
    mmd2_runs: list[float] = field(default_factory=list)
    mmd_bandwidth: float = 0.0  # mean over draws of the median distance among the downstream texts
    mmd_p: float | None = None  # permutation p-value of draw 0 (None: test not run)
    warning: str = ""  # e.g. fewer texts per side than requested
    draw0: DrawView | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("draw0")
        return d


@dataclass
class TableRun:
    """Every requested pair's result or error, and the sources that were skipped and why."""

    results: list[PairResult] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {src, tgt, error} or {source, error}
    skipped: list[dict] = field(default_factory=list)  # {source, reason}
    sources: dict[str, dict] = field(default_factory=dict)  # name -> file, sha256, counts, notes, models

    def untrained(self, encoder_id: str) -> list[str]:
        """Untrained models behind these numbers: the encoder, or a captioner that wrote a source."""
        return untrained_ids([encoder_id, *(m for s in self.sources.values() for m in s.get("models", []))])


def n_label(results: Sequence[PairResult]) -> str:
    """'n=1000/side x 10 draws' when every pair drew the same, else the range that really ran."""
    ns = sorted({r.samples for r in results})
    reps = sorted({r.repeats for r in results})
    n = f"n={ns[0]}/side" if len(ns) == 1 else f"n={ns[0]}..{ns[-1]}/side (differs by pair)"
    return f"{n} x {reps[0] if len(reps) == 1 else reps} draws"


def smaller_warning(results: Sequence[PairResult]) -> str:
    """One warning line naming every pair that drew fewer texts per side than requested ('' if none)."""
    small = [r for r in results if r.samples < r.samples_requested]
    if not small:
        return ""
    if len(small) <= 6:
        pairs = ", ".join(f"{r.src} vs {r.tgt} (n={r.samples})" for r in small)
    else:
        pairs = f"{len(small)} of {len(results)} pairs (n={min(r.samples for r in small)}..{max(r.samples for r in small)})"
    whole = [r for r in small if r.samples == min(r.src_texts, r.tgt_texts)]
    note = (
        f" {len(whole)} of them draw every text of their smaller side each time, so their intervals show "
        "only the other side's and k-means's variation."
        if whole
        else ""
    )
    return (
        f"WARNING: fewer texts per side than --samples {small[0].samples_requested}: {pairs}. "
        f"NMI and MMD at different n are not comparable; the paper uses n=1000.{note}"
    )


def detail_line(r: PairResult) -> str:
    ci = "n/a" if r.nmi_ci is None else f"[{r.nmi_ci[0]:.3f}, {r.nmi_ci[1]:.3f}]"
    sweep = " ".join(f"k{s['k']}={s['nmi_mean']:.3f}" for s in r.k_sweep)
    p = "" if r.mmd_p is None else f" p={r.mmd_p:.3g}"
    return (
        f"  {r.src} vs {r.tgt}: n={r.samples}/side x {r.repeats}  NMI {r.nmi_mean:.3f}+-{r.nmi_std:.3f} "
        f"{r.ci_level:.0%} CI {ci}  [{sweep}]  MMD2 {r.mmd2_mean:.4f}+-{r.mmd2_std:.4f}{p}"
    )


def format_table(run: TableRun, pairs: Sequence[tuple[str, str]]) -> str:
    """Paper layout (rows = downstream datasets, columns = pretraining sources, mean +- std and n per
    side), then one detail line per pair, then the warning row and the notes."""
    srcs = list(dict.fromkeys(s for s, _ in pairs))
    tgts = list(dict.fromkeys(t for _, t in pairs))
    by = {(r.src, r.tgt): r for r in run.results}
    width = max(22, *(len(LABELS.get(s, s)) + 2 for s in srcs))
    lines = ["NMI".ljust(10) + "".join(LABELS.get(s, s).rjust(width) for s in srcs)]
    for t in tgts:
        cells = []
        for s in srcs:
            r = by.get((s, t))
            cells.append((f"{r.nmi_mean:.3f}+-{r.nmi_std:.3f} n={r.samples}" if r else "n/a").rjust(width))
        lines.append(LABELS.get(t, t).ljust(10) + "".join(cells))
    lines += [detail_line(r) for r in run.results]
    warning = smaller_warning(run.results)
    if warning:
        lines.append(warning)
    lines += [f"  {d['source']}: skipped ({d['reason']})" for d in run.skipped]
    lines += [
        f"  {d.get('source') or d['src'] + ' vs ' + d['tgt']}: error ({d['error']})" for d in run.errors
    ]
    return "\n".join(lines)


def write_csv(path: Path, run: TableRun) -> None:
    cols = [
        "src",
        "tgt",
        "samples",
        "samples_requested",
        "nmi_mean",
        "nmi_std",
        "repeats",
        "seed",
        "encoder",
        "encoder_id",
        "kmeans",
        "mmd2_mean",
        "mmd2_std",
        "mmd_p",
        "warning",
    ]
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols + ["nmi_ci_lo", "nmi_ci_hi", "k_sweep", "nmi_runs", "error"])
        for r in run.results:
            d = r.to_json()
            ci: list[object] = list(r.nmi_ci) if r.nmi_ci else ["", ""]
            sweep = " ".join(f"{s['k']}:{s['nmi_mean']:.6f}" for s in r.k_sweep)
            runs = " ".join(f"{v:.6f}" for v in r.nmi_runs)
            w.writerow([d[c] for c in cols] + [*ci, sweep, runs, ""])
        for e in run.errors:  # a source-level error has no target
            w.writerow(
                [e.get("src", e.get("source")), e.get("tgt", "")] + [""] * (len(cols) + 2) + [e["error"]]
            )


def figure_title(run: TableRun, encoder_id: str, headline_k: int = 2) -> str:
    title = f"NMI of k-means (k={headline_k}) vs source; {encoder_id}; {n_label(run.results)}"
    untrained = run.untrained(encoder_id)
    if untrained:
        title = f"UNTRAINED model(s): {', '.join(untrained)} ({UNTRAINED_NOTE})\n" + title
    return title


def plot_table(path: Path, run: TableRun, encoder_id: str, headline_k: int = 2) -> Path:
    draws = [r.draw0 for r in run.results if r.draw0 is not None]
    bars = [Bar(r.src, r.tgt, r.nmi_mean, r.nmi_std, r.samples, r.nmi_ci) for r in run.results]
    return plot_nmi(path, draws, bars, figure_title(run, encoder_id, headline_k))
