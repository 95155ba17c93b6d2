"""Language domain gap between pretraining texts and downstream queries (CLIP-ViP §3.2, Table 1).

For a (source, target) pair: draw `samples` texts from each side, encode them, mix the features,
run K-means with k=2 and compute the NMI between cluster ids and the true side; repeat `repeats`
times and report mean +- std. High NMI = the two text distributions are easy to tell apart = large gap.

    python analysis/nmi.py --src hdvila_sub --tgt msrvtt [--sources FILE] [--encoder clip|minilm]
        [--clip-weights DIR] [--samples 1000] [--repeats 10] [--seed 0] [--out FILE.json]
    python analysis/nmi.py --all --encoder minilm --sources my_sources.toml --out table.json

See docs/ANALYSIS.md.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    # Run as a script: drop analysis/ from sys.path so its module names (cache, sources, ...) cannot
    # shadow top-level packages; `analysis` itself is importable through the editable install.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    if os.path.dirname(_here) not in sys.path:
        sys.path.append(os.path.dirname(_here))

import argparse
import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from analysis.cache import FeatureCache, default_cache_dir, file_sha256
from analysis.clustering import KMeansConfig, kmeans_labels, nmi
from analysis.encoders import DEFAULT_BATCH_SIZE, ENCODERS, EncodeOptions, TextEncoder, load_encoder
from analysis.plots import Bar, DrawView, plot_nmi
from analysis.sources import LoadedSource, SourceFormatError, SourceSpec, load_registry, load_source
from pipeline.atomic import write_bytes_atomic

log = logging.getLogger("analysis.nmi")

DEFAULT_SOURCES_FILE = Path(__file__).with_name("sources.example.toml")
# Table 1 of the paper: pretraining sources (columns) x downstream datasets (rows).
TABLE_SOURCES = ("hdvila_sub", "hdvila_cap", "webvid", "coco", "cc12m")
TABLE_FALLBACKS = {"cc12m": "cc3m"}  # CC12M alt-texts are not always at hand; CC3M is the same kind
TABLE_TARGETS = ("msrvtt", "didemo")
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


@dataclass(frozen=True)
class NmiConfig:
    samples: int = 1000  # texts drawn from each side per repeat (paper: 1000)
    repeats: int = 10  # random draws averaged (paper: 10)
    seed: int = 0
    allow_smaller: bool = False  # a side with fewer texts than `samples` uses min(len) on both sides
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)


class TooFewTexts(ValueError):
    pass


@dataclass
class PreparedSource:
    loaded: LoadedSource
    file_hash: str
    cache: FeatureCache

    @property
    def name(self) -> str:
        return self.loaded.spec.name

    @property
    def texts(self) -> list[str]:
        return self.loaded.texts


@dataclass
class PairResult:
    src: str
    tgt: str
    encoder: str
    samples: int
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
    draw0: DrawView | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("draw0")
        return d


@dataclass(frozen=True)
class Draw:
    src_idx: np.ndarray
    tgt_idx: np.ndarray
    kmeans_seed: int


def plan_draws(n_src: int, n_tgt: int, cfg: NmiConfig) -> tuple[int, list[Draw]]:
    """Per-side sample size and the `repeats` draws (without replacement), deterministic in `seed`."""
    n = cfg.samples
    if min(n_src, n_tgt) < n:
        if not cfg.allow_smaller:
            raise TooFewTexts(
                f"only {min(n_src, n_tgt)} texts on the smaller side (source {n_src}, target {n_tgt}) "
                f"but --samples {n}; pass --allow-smaller to use them all"
            )
        n = min(n_src, n_tgt)  # equal sides keep the 50/50 mix the NMI values are comparable under
    if n < 2:
        raise TooFewTexts(f"need at least 2 texts per side, have source {n_src}, target {n_tgt}")
    rng = np.random.default_rng(cfg.seed)
    draws = []
    for _ in range(cfg.repeats):
        src_idx = rng.choice(n_src, size=n, replace=False)
        tgt_idx = rng.choice(n_tgt, size=n, replace=False)
        draws.append(Draw(src_idx, tgt_idx, int(rng.integers(2**31 - 1))))
    return n, draws


def prepare_source(spec: SourceSpec, encoder_id: str, cache_root: Path | None) -> PreparedSource:
    loaded = load_source(spec)
    log.info("%s", loaded.summary())
    digest = file_sha256(spec.path, cache_root)
    return PreparedSource(loaded, digest, FeatureCache(cache_root, digest, encoder_id))


def measure_pair(
    src: PreparedSource, tgt: PreparedSource, encoder: TextEncoder, encoder_name: str, cfg: NmiConfig
) -> PairResult:
    """NMI mean and std over the draws of one (source, target) pair."""
    n, draws = plan_draws(len(src.texts), len(tgt.texts), cfg)
    # Encode the union of every draw's texts once per side (cached on disk), then index per draw.
    src_used = np.unique(np.concatenate([d.src_idx for d in draws]))
    tgt_used = np.unique(np.concatenate([d.tgt_idx for d in draws]))
    src_feats = dict(
        zip(src_used.tolist(), src.cache.features([src.texts[i] for i in src_used], encoder.encode))
    )
    tgt_feats = dict(
        zip(tgt_used.tolist(), tgt.cache.features([tgt.texts[i] for i in tgt_used], encoder.encode))
    )
    labels = np.repeat(np.array([0, 1]), n)
    runs: list[float] = []
    draw0 = None
    t0 = time.perf_counter()
    for r, d in enumerate(draws):
        x = np.stack([src_feats[i] for i in d.src_idx.tolist()] + [tgt_feats[i] for i in d.tgt_idx.tolist()])
        clusters = kmeans_labels(x, d.kmeans_seed, cfg.kmeans)
        runs.append(nmi(labels, clusters))
        if r == 0:
            draw0 = DrawView(src.name, tgt.name, x, labels, clusters, runs[0])
    log.info(
        "%s vs %s: %d draws of %d+%d clustered in %.2fs",
        src.name,
        tgt.name,
        len(draws),
        n,
        n,
        time.perf_counter() - t0,
    )
    runs_arr = np.asarray(runs)
    return PairResult(
        src=src.name,
        tgt=tgt.name,
        encoder=encoder_name,
        samples=n,
        repeats=cfg.repeats,
        seed=cfg.seed,
        nmi_mean=float(runs_arr.mean()),
        # sample standard deviation of the per-draw NMIs (0 for a single draw)
        nmi_std=float(runs_arr.std(ddof=1)) if len(runs) > 1 else 0.0,
        nmi_runs=[float(v) for v in runs],
        encoder_id=encoder.id,
        samples_requested=cfg.samples,
        kmeans=f"{cfg.kmeans.backend}(k={cfg.kmeans.k}, niter={cfg.kmeans.niter}, nredo={cfg.kmeans.nredo})",
        src_texts=len(src.texts),
        tgt_texts=len(tgt.texts),
        draw0=draw0,
    )


@dataclass
class TableRun:
    """Every requested pair's result or error, and the sources that were skipped and why."""

    results: list[PairResult] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {src, tgt, error} or {source, error}
    skipped: list[dict] = field(default_factory=list)  # {source, reason}
    sources: dict[str, dict] = field(default_factory=dict)  # name -> file, sha256, counts, notes


def run_pairs(
    pairs: Sequence[tuple[str, str]],
    registry: dict[str, SourceSpec],
    encoder: TextEncoder,
    encoder_name: str,
    cfg: NmiConfig,
    cache_root: Path | None,
    skip_missing: bool,
) -> TableRun:
    """Measure each pair; a pair whose source cannot be used is recorded (skipped or error) and the run goes on."""
    run = TableRun()
    prepared: dict[str, PreparedSource | None] = {}

    def get(name: str) -> PreparedSource | None:
        if name in prepared:
            return prepared[name]
        prepared[name] = None
        spec = registry.get(name)
        if spec is None or not spec.path.is_file():
            reason = "not in the sources registry" if spec is None else f"file {spec.path} is absent"
            if not skip_missing:
                raise FileNotFoundError(
                    f"source {name}: {reason} (docs/ANALYSIS.md lists the files and where)"
                )
            run.skipped.append({"source": name, "reason": reason})
            log.warning("skipping source %s: %s", name, reason)
            return None
        try:
            p = prepare_source(spec, encoder.id, cache_root)
        except (SourceFormatError, OSError) as e:
            if not skip_missing:
                raise
            run.errors.append({"source": name, "error": str(e)})  # present but unusable: an error
            log.error("source %s unusable: %s", name, e)
            return None
        prepared[name] = p
        run.sources[name] = {
            "format": spec.format,
            "path": str(spec.path),
            "sha256": p.file_hash,
            "options": spec.options,
            "texts": len(p.texts),
            "records": p.loaded.rows,
            "empty_skipped": p.loaded.empty,
            "malformed_skipped": p.loaded.malformed,
            "notes": p.loaded.notes,
        }
        return p

    for src_name, tgt_name in pairs:
        src, tgt = get(src_name), get(tgt_name)
        if src is None or tgt is None:
            continue
        try:
            run.results.append(measure_pair(src, tgt, encoder, encoder_name, cfg))
        except TooFewTexts as e:
            if not skip_missing:
                raise
            run.errors.append({"src": src_name, "tgt": tgt_name, "error": str(e)})
            log.error("%s vs %s: %s", src_name, tgt_name, e)
    return run


def table_pairs(registry: dict[str, SourceSpec]) -> list[tuple[str, str]]:
    """The paper's Table 1 pairs; CC12M falls back to CC3M when only that is registered and present."""
    srcs = []
    for s in TABLE_SOURCES:
        alt = TABLE_FALLBACKS.get(s)
        present = s in registry and registry[s].path.is_file()
        if not present and alt and alt in registry and registry[alt].path.is_file():
            s = alt
        srcs.append(s)
    return [(s, t) for t in TABLE_TARGETS for s in srcs]


def format_table(run: TableRun, pairs: Sequence[tuple[str, str]]) -> str:
    """Paper layout: rows = downstream datasets, columns = pretraining text sources, mean +- std."""
    srcs = list(dict.fromkeys(s for s, _ in pairs))
    tgts = list(dict.fromkeys(t for _, t in pairs))
    by = {(r.src, r.tgt): r for r in run.results}
    width = max(14, *(len(LABELS.get(s, s)) + 2 for s in srcs))
    lines = ["NMI".ljust(10) + "".join(LABELS.get(s, s).rjust(width) for s in srcs)]
    for t in tgts:
        cells = []
        for s in srcs:
            r = by.get((s, t))
            cells.append((f"{r.nmi_mean:.3f}+-{r.nmi_std:.3f}" if r else "n/a").rjust(width))
        lines.append(LABELS.get(t, t).ljust(10) + "".join(cells))
    notes = [f"  {d['source']}: skipped ({d['reason']})" for d in run.skipped]
    notes += [
        f"  {d.get('source') or d['src'] + ' vs ' + d['tgt']}: error ({d['error']})" for d in run.errors
    ]
    return "\n".join(lines + notes)


def write_csv(path: Path, run: TableRun) -> None:
    cols = [
        "src",
        "tgt",
        "nmi_mean",
        "nmi_std",
        "samples",
        "repeats",
        "seed",
        "encoder",
        "encoder_id",
        "kmeans",
    ]
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols + ["nmi_runs", "error"])
        for r in run.results:
            d = r.to_json()
            w.writerow([d[c] for c in cols] + [" ".join(f"{v:.6f}" for v in r.nmi_runs), ""])
        for e in run.errors:  # a source-level error has no target
            w.writerow(
                [e.get("src", e.get("source")), e.get("tgt", "")] + [""] * (len(cols) - 2) + [e["error"]]
            )


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _split_names(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python analysis/nmi.py",
        description="NMI language-domain gap between pretraining and downstream texts (CLIP-ViP §3.2).",
    )
    p.add_argument("--src", help="pretraining source name(s) in the registry, comma-separated")
    p.add_argument("--tgt", help="downstream source name(s), comma-separated")
    p.add_argument(
        "--all",
        action="store_true",
        help="the paper's table: "
        + ", ".join(TABLE_SOURCES)
        + " x "
        + ", ".join(TABLE_TARGETS)
        + "; absent sources are skipped with a note",
    )
    p.add_argument("--sources", type=Path, default=DEFAULT_SOURCES_FILE, help="sources registry TOML")
    p.add_argument("--encoder", choices=ENCODERS, default="clip")
    p.add_argument("--clip-weights", type=Path, help="HF CLIP directory or OpenAI CLIP .pt")
    p.add_argument(
        "--clip-tokenizer",
        type=Path,
        help="directory with vocab.json + merges.txt (default: the weights directory)",
    )
    p.add_argument("--samples", type=int, default=NmiConfig.samples)
    p.add_argument("--repeats", type=int, default=NmiConfig.repeats)
    p.add_argument("--seed", type=int, default=NmiConfig.seed)
    p.add_argument("--kmeans", choices=("faiss", "sklearn"), default=KMeansConfig.backend)
    p.add_argument("--nredo", type=int, default=KMeansConfig.nredo, help="k-means restarts")
    p.add_argument(
        "--allow-smaller",
        action="store_true",
        help="a side with fewer texts than --samples: use min(len) texts per side instead of failing",
    )
    p.add_argument(
        "--cache-dir", type=Path, default=None, help=f"feature cache (default {default_cache_dir()})"
    )
    p.add_argument("--no-cache", action="store_true", help="encode every run, write no cache")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--device", default="cpu", help="torch device for the encoder (cpu, cuda, cuda:1, ...)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is faster on a machine shared with other jobs)",
    )
    p.add_argument("--out", type=Path, help="result JSON (with --all default nmi_table.json)")
    p.add_argument("--csv", type=Path, help="table CSV (with --all default: --out with .csv)")
    p.add_argument(
        "--plot",
        type=Path,
        help="PNG: PCA of one draw per pair + bar chart (with --all default: --out with .png)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(
    argv: Sequence[str] | None = None, encoder_factory: Callable[..., TextEncoder] = load_encoder
) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.all:
        if args.src or args.tgt:
            print(
                "error: --all measures the paper's table; do not combine it with --src/--tgt", file=sys.stderr
            )
            return 2
    elif not (args.src and args.tgt):
        print("error: give --src NAME --tgt NAME, or --all", file=sys.stderr)
        return 2
    if args.samples < 2 or args.repeats < 1:
        print("error: --samples must be >= 2 and --repeats >= 1", file=sys.stderr)
        return 2
    try:
        registry = load_registry(args.sources)
    except SourceFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pairs = (
        table_pairs(registry)
        if args.all
        else [(s, t) for t in _split_names(args.tgt) for s in _split_names(args.src)]
    )
    table_mode = args.all or len(pairs) > 1
    cfg = NmiConfig(
        samples=args.samples,
        repeats=args.repeats,
        seed=args.seed,
        allow_smaller=args.allow_smaller,
        kmeans=KMeansConfig(backend=args.kmeans, nredo=args.nredo),
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cache_root = None if args.no_cache else (args.cache_dir or default_cache_dir())
    opts = EncodeOptions(batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    try:
        encoder = encoder_factory(args.encoder, args.clip_weights, args.clip_tokenizer, opts, cache_root)
        run = run_pairs(pairs, registry, encoder, args.encoder, cfg, cache_root, skip_missing=table_mode)
    except (SourceFormatError, FileNotFoundError, TooFewTexts, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if not table_mode:
        r = run.results[0]
        print(
            f"NMI {r.src} vs {r.tgt} ({r.encoder_id}, {r.samples}+{r.samples} texts x {r.repeats} draws, "
            f"seed {r.seed}): {r.nmi_mean:.4f} +- {r.nmi_std:.4f}"
        )
        print("runs: " + " ".join(f"{v:.4f}" for v in r.nmi_runs))
        if args.out:
            obj = r.to_json()
            obj["sources"] = run.sources
            _write_json(args.out, obj)
            print(f"wrote {args.out}")
        if args.plot:
            _plot(args.plot, run, r.encoder_id, cfg)
        return 0

    print(format_table(run, pairs))
    if not run.results:
        print("error: no pair could be measured (see the notes above)", file=sys.stderr)
        return 1
    out = args.out or Path("nmi_table.json")
    obj = {
        "encoder": args.encoder,
        "encoder_id": encoder.id,
        "samples": cfg.samples,
        "repeats": cfg.repeats,
        "seed": cfg.seed,
        "kmeans": cfg.kmeans.backend,
        "results": [r.to_json() for r in run.results],
        "errors": run.errors,
        "skipped": run.skipped,
        "sources": run.sources,
    }
    _write_json(out, obj)
    csv_path = args.csv or out.with_suffix(".csv")
    write_csv(csv_path, run)
    written = [out, csv_path]
    if run.results:
        written.append(_plot(args.plot or out.with_suffix(".png"), run, encoder.id, cfg))
    print("wrote " + ", ".join(map(str, written)))
    return 1 if run.errors else 0


def _plot(path: Path, run: TableRun, encoder_id: str, cfg: NmiConfig) -> Path:
    draws = [r.draw0 for r in run.results if r.draw0 is not None]
    bars = [Bar(r.src, r.tgt, r.nmi_mean, r.nmi_std) for r in run.results]
    title = f"NMI of k-means (k=2) vs source; {encoder_id}; {cfg.samples}/side x {cfg.repeats} draws"
    return plot_nmi(path, draws, bars, title)


if __name__ == "__main__":
    sys.exit(main())
