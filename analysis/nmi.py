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
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.cache import FeatureCache, default_cache_dir, file_sha256
from analysis.clustering import KMeansConfig, kmeans_labels, nmi
from analysis.encoders import DEFAULT_BATCH_SIZE, ENCODERS, EncodeOptions, TextEncoder, load_encoder
from analysis.gap import (
    BOOTSTRAP_RESAMPLES,
    CI_LEVEL,
    K_SWEEP,
    MMD_PERMUTATIONS,
    Summary,
    median_bandwidth,
    mmd2,
    mmd_permutation_p,
)
from analysis.plots import DrawView
from analysis.report import (
    UNTRAINED_NOTE,
    PairResult,
    TableRun,
    detail_line,
    format_table,
    n_label,
    plot_table,
    smaller_warning,
    write_csv,
)
from analysis.sources import LoadedSource, SourceFormatError, SourceSpec, load_registry, load_source
from pipeline.atomic import write_bytes_atomic
from pipeline.cli import UserError, output_file, quiet_library_progress, run_cli

log = logging.getLogger("analysis.nmi")

DEFAULT_SOURCES_FILE = Path(__file__).with_name("sources.example.toml")
# Table 1 of the paper: pretraining sources (columns) x downstream datasets (rows).
TABLE_SOURCES = ("hdvila_sub", "hdvila_cap", "webvid", "coco", "cc12m")
TABLE_FALLBACKS = {"cc12m": "cc3m"}  # CC12M alt-texts are not always at hand; CC3M is the same kind
TABLE_TARGETS = ("msrvtt", "didemo")


@dataclass(frozen=True)
class NmiConfig:
    samples: int = 1000  # texts drawn from each side per repeat (paper: 1000)
    repeats: int = 10  # random draws averaged (paper: 10)
    seed: int = 0
    allow_smaller: bool = False  # a side with fewer texts than `samples` uses min(len) on both sides
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    k_sweep: tuple[int, ...] = K_SWEEP  # extra k-means runs per draw (k = kmeans.k is the headline)
    ci_level: float = CI_LEVEL
    bootstrap: int = BOOTSTRAP_RESAMPLES
    mmd_permutations: int = MMD_PERMUTATIONS  # 0: no permutation test


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


def _draw_features(src: PreparedSource, tgt: PreparedSource, draws: list[Draw], encoder: TextEncoder) -> list:
    """Each draw's stacked features [2n, D] (source rows first); every text is encoded once (cached)."""
    src_used = np.unique(np.concatenate([d.src_idx for d in draws]))
    tgt_used = np.unique(np.concatenate([d.tgt_idx for d in draws]))
    src_feats = dict(
        zip(src_used.tolist(), src.cache.features([src.texts[i] for i in src_used], encoder.encode))
    )
    tgt_feats = dict(
        zip(tgt_used.tolist(), tgt.cache.features([tgt.texts[i] for i in tgt_used], encoder.encode))
    )
    return [
        np.stack([src_feats[i] for i in d.src_idx.tolist()] + [tgt_feats[i] for i in d.tgt_idx.tolist()])
        for d in draws
    ]


def measure_pair(
    src: PreparedSource, tgt: PreparedSource, encoder: TextEncoder, encoder_name: str, cfg: NmiConfig
) -> PairResult:
    """NMI (k = 2, and the k sweep) and MMD² over the same draws of one (source, target) pair."""
    n, draws = plan_draws(len(src.texts), len(tgt.texts), cfg)
    feats = _draw_features(src, tgt, draws, encoder)
    labels = np.repeat(np.array([0, 1]), n)
    # k-means needs fewer clusters than points; the headline k (2) always fits (n >= 2)
    ks = [k for k in dict.fromkeys([cfg.kmeans.k, *cfg.k_sweep]) if k == cfg.kmeans.k or k < 2 * n]
    by_k: dict[int, list[float]] = {k: [] for k in ks}
    mmds: list[float] = []
    widths: list[float] = []
    draw0 = None
    t0 = time.perf_counter()
    for r, (d, x) in enumerate(zip(draws, feats)):
        for k in ks:
            clusters = kmeans_labels(x, d.kmeans_seed, replace(cfg.kmeans, k=k))
            by_k[k].append(nmi(labels, clusters))
            if r == 0 and k == cfg.kmeans.k:
                draw0 = DrawView(src.name, tgt.name, x, labels, clusters, by_k[k][0])
        widths.append(median_bandwidth(x[n:]))
        mmds.append(mmd2(x[:n], x[n:], widths[-1]))
    p = (
        mmd_permutation_p(feats[0][:n], feats[0][n:], widths[0], cfg.mmd_permutations, draws[0].kmeans_seed)
        if cfg.mmd_permutations > 0
        else None
    )
    log.info(
        "%s vs %s: %d draws of %d+%d, k in %s, clustered in %.2fs",
        src.name, tgt.name, len(draws), n, n, ks, time.perf_counter() - t0,
    )  # fmt: skip
    stats = {k: Summary.of(v, cfg.seed, cfg.ci_level, cfg.bootstrap) for k, v in by_k.items()}
    head, mmd = stats[cfg.kmeans.k], Summary.of(mmds, cfg.seed, cfg.ci_level, cfg.bootstrap)
    return PairResult(
        src=src.name,
        tgt=tgt.name,
        encoder=encoder_name,
        samples=n,
        repeats=cfg.repeats,
        seed=cfg.seed,
        nmi_mean=head.mean,
        nmi_std=head.std,  # sample standard deviation of the per-draw NMIs (0 for a single draw)
        nmi_runs=head.runs,
        encoder_id=encoder.id,
        samples_requested=cfg.samples,
        kmeans=f"{cfg.kmeans.backend}(k={cfg.kmeans.k}, niter={cfg.kmeans.niter}, nredo={cfg.kmeans.nredo})",
        src_texts=len(src.texts),
        tgt_texts=len(tgt.texts),
        ci_level=cfg.ci_level,
        nmi_ci=head.ci.to_json() if head.ci else None,
        k_sweep=[
            {
                "k": k,
                "nmi_mean": s.mean,
                "nmi_std": s.std,
                "nmi_ci": s.ci.to_json() if s.ci else None,
                "nmi_runs": s.runs,
            }
            for k, s in sorted(stats.items())
        ],  # fmt: skip
        mmd2_mean=mmd.mean,
        mmd2_std=mmd.std,
        mmd2_ci=mmd.ci.to_json() if mmd.ci else None,
        mmd2_runs=mmd.runs,
        mmd_bandwidth=float(np.mean(widths)),
        mmd_p=p,
        warning=_small_warning(n, len(src.texts), len(tgt.texts), cfg.samples),
        draw0=draw0,
    )


def _small_warning(n: int, n_src: int, n_tgt: int, requested: int) -> str:
    if n >= requested:
        return ""
    w = f"{n} texts per side, fewer than --samples {requested} (source {n_src}, target {n_tgt})"
    if n == min(n_src, n_tgt):  # every draw holds all texts of the smaller side
        w += "; every draw uses all of the smaller side, so the interval reflects only the other side and k-means"
    return w


def source_models(spec: SourceSpec) -> list[str]:
    """Ids of the models that wrote a source: the `captioner` column of the job's captions Parquet
    (CONTRACTS §3), so a table built on untrained captions can say so."""
    if spec.format != "captions_parquet" or "captioner" not in pq.read_schema(spec.path).names:
        return []
    column = pq.read_table(spec.path, columns=["captioner"]).column(0)
    return sorted(str(v) for v in pc.unique(column).to_pylist() if v)


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
        if spec is None or not spec.path.exists():  # a subtitle folder is a source too
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
            "models": source_models(spec),
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


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _split_names(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 2:
        raise argparse.ArgumentTypeError(f"every k must be >= 2, got {text!r}")
    return ks


def add_gap_args(p: argparse.ArgumentParser) -> None:
    """Encoder, draw and statistics options shared by nmi.py and compare.py (defaults shown in --help)."""
    p.add_argument("--encoder", choices=ENCODERS, default="clip", help="text encoder (clip: the paper's)")
    p.add_argument("--clip-weights", type=Path, help="HF CLIP directory or OpenAI CLIP .pt")
    p.add_argument(
        "--clip-tokenizer",
        type=Path,
        help="directory with vocab.json + merges.txt (None: the weights directory)",
    )
    p.add_argument("--samples", type=int, default=NmiConfig.samples, help="texts per side per draw")
    p.add_argument("--repeats", type=int, default=NmiConfig.repeats, help="random draws averaged")
    p.add_argument("--seed", type=int, default=NmiConfig.seed, help="seed of the draws and k-means")
    p.add_argument("--kmeans", choices=("faiss", "sklearn"), default=KMeansConfig.backend, help="backend")
    p.add_argument("--nredo", type=int, default=KMeansConfig.nredo, help="k-means restarts")
    p.add_argument(
        "--k-sweep",
        type=_int_list,
        default=",".join(map(str, K_SWEEP)),  # a string default goes through `type` too
        help="cluster counts measured besides k=2 on the same draws, comma-separated",
    )
    p.add_argument("--ci", type=float, default=CI_LEVEL, help="confidence level of the bootstrap intervals")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES, help="bootstrap resamples")
    p.add_argument(
        "--mmd-permutations",
        type=int,
        default=MMD_PERMUTATIONS,
        help="permutations of the MMD test on draw 0 (0: no test)",
    )
    p.add_argument(
        "--allow-smaller",
        action="store_true",
        help="a side with fewer texts than --samples: use min(len) texts per side instead of failing",
    )
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="feature cache")
    p.add_argument("--no-cache", action="store_true", help="encode every run, write no cache")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts per encoder batch")
    p.add_argument("--device", default="cpu", help="torch device for the encoder (cpu, cuda, cuda:1, ...)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (None: torch's choice; 1 is faster on a machine shared with other jobs)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and results only")


def config_from_args(args: argparse.Namespace) -> NmiConfig:
    """The measurement settings; raises ValueError (one line for the user) for values out of range."""
    if args.samples < 2 or args.repeats < 1:
        raise ValueError("--samples must be >= 2 and --repeats >= 1")
    if not 0 < args.ci < 1 or args.bootstrap < 1 or args.mmd_permutations < 0 or args.nredo < 1:
        raise ValueError("--ci must be in (0, 1), --bootstrap and --nredo >= 1, --mmd-permutations >= 0")
    return NmiConfig(
        samples=args.samples,
        repeats=args.repeats,
        seed=args.seed,
        allow_smaller=args.allow_smaller,
        kmeans=KMeansConfig(backend=args.kmeans, nredo=args.nredo),
        k_sweep=args.k_sweep,
        ci_level=args.ci,
        bootstrap=args.bootstrap,
        mmd_permutations=args.mmd_permutations,
    )


def encoder_from_args(
    args: argparse.Namespace, encoder_factory: Callable[..., TextEncoder]
) -> tuple[TextEncoder, Path | None]:
    """The text encoder (loaded lazily) and the cache root of the run."""
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.no_progress:
        quiet_library_progress()  # before the encoder loads: transformers' own "Loading weights" bar
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cache_root = None if args.no_cache else args.cache_dir
    opts = EncodeOptions(batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    return encoder_factory(args.encoder, args.clip_weights, args.clip_tokenizer, opts, cache_root), cache_root


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python analysis/nmi.py",
        description="NMI language-domain gap between pretraining and downstream texts (CLIP-ViP §3.2), "
        "with a bootstrap CI, a k sweep and MMD on the same features (docs/ANALYSIS.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    add_gap_args(p)
    p.add_argument("--out", type=Path, help="result JSON (None: with --all, nmi_table.json)")
    p.add_argument("--csv", type=Path, help="table CSV (None: with --all, --out with .csv)")
    p.add_argument(
        "--plot",
        type=Path,
        help="PNG: PCA of one draw per pair + bar chart (None: with --all, --out with .png)",
    )
    return p


def main(
    argv: Sequence[str] | None = None, encoder_factory: Callable[..., TextEncoder] = load_encoder
) -> int:
    args = build_parser().parse_args(argv)
    if args.all:
        if args.src or args.tgt:
            print(
                "error: --all measures the paper's table; do not combine it with --src/--tgt", file=sys.stderr
            )
            return 2
    elif not (args.src and args.tgt):
        print("error: give --src NAME --tgt NAME, or --all", file=sys.stderr)
        return 2
    try:
        for path, what in ((args.out, "--out"), (args.csv, "--csv"), (args.plot, "--plot")):
            if path is not None:
                output_file(path, what)  # a bad output path is refused before any encoding
        cfg = config_from_args(args)
        registry = load_registry(args.sources)
    except (ValueError, SourceFormatError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pairs = (
        table_pairs(registry)
        if args.all
        else [(s, t) for t in _split_names(args.tgt) for s in _split_names(args.src)]
    )
    table_mode = args.all or len(pairs) > 1
    try:
        encoder, cache_root = encoder_from_args(args, encoder_factory)
        run = run_pairs(pairs, registry, encoder, args.encoder, cfg, cache_root, skip_missing=table_mode)
    except (SourceFormatError, FileNotFoundError, TooFewTexts, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if not table_mode:
        return _report_pair(args, run, encoder.id, cfg)
    return _report_table(args, run, pairs, encoder.id, cfg)


def _report_pair(args: argparse.Namespace, run: TableRun, encoder_id: str, cfg: NmiConfig) -> int:
    """One pair: the printed result, and the JSON / plot when asked for."""
    untrained = run.untrained(encoder_id)
    r = run.results[0]
    print(
        f"NMI {r.src} vs {r.tgt} ({r.encoder_id}, n={r.samples}/side x {r.repeats} draws, "
        f"seed {r.seed}): {r.nmi_mean:.4f} +- {r.nmi_std:.4f}"
    )
    print("runs: " + " ".join(f"{v:.4f}" for v in r.nmi_runs))
    print(detail_line(r))
    for line in filter(None, [smaller_warning(run.results), _untrained_line(untrained)]):
        print(line)
    if args.out:
        obj = {**r.to_json(), "untrained": bool(untrained), "untrained_models": untrained}
        obj["sources"] = run.sources
        _write_json(args.out, obj)
        print(f"wrote {args.out}")
    if args.plot:
        plot_table(args.plot, run, encoder_id, cfg.kmeans.k)
    return 0


def _report_table(
    args: argparse.Namespace, run: TableRun, pairs: list[tuple[str, str]], encoder_id: str, cfg: NmiConfig
) -> int:
    """Several pairs (or --all): the table, and its JSON, CSV and figure."""
    untrained = run.untrained(encoder_id)
    print(format_table(run, pairs))
    if untrained:
        print(_untrained_line(untrained))
    if not run.results:
        print("error: no pair could be measured (see the notes above)", file=sys.stderr)
        return 1
    out = args.out or Path("nmi_table.json")
    obj = {
        "encoder": args.encoder,
        "encoder_id": encoder_id,
        "samples": cfg.samples,  # requested; each result's `samples` is the n per side it drew
        "repeats": cfg.repeats,
        "seed": cfg.seed,
        "kmeans": cfg.kmeans.backend,
        "k_sweep": list(cfg.k_sweep),
        "ci_level": cfg.ci_level,
        "n_per_side": n_label(run.results),
        "warnings": [w for w in [smaller_warning(run.results)] if w],
        "untrained": bool(untrained),
        "untrained_models": untrained,
        "results": [r.to_json() for r in run.results],
        "errors": run.errors,
        "skipped": run.skipped,
        "sources": run.sources,
    }
    _write_json(out, obj)
    csv_path = args.csv or out.with_suffix(".csv")
    write_csv(csv_path, run)
    written = [out, csv_path, plot_table(args.plot or out.with_suffix(".png"), run, encoder_id, cfg.kmeans.k)]
    print("wrote " + ", ".join(map(str, written)))
    return 1 if run.errors else 0


def _untrained_line(untrained: list[str]) -> str:
    return f"UNTRAINED model(s): {', '.join(untrained)} ({UNTRAINED_NOTE})" if untrained else ""


if __name__ == "__main__":
    sys.exit(run_cli(main))  # Ctrl-C: one line, exit 130
