"""Compare captioners on the same clips: which one closes the language gap, at what cost.

For each captioner's output (an OUT dir of the caption job, or its captions.parquet): the gap to the
chosen downstream queries (NMI k = 2 with a bootstrap CI, the k sweep, MMD²), caption length and
vocabulary (distinct-1/2), agreement with the other captioners (embedding cosine and BLEU-4 on the
same clips), BLEU-4 / CIDEr-D against reference captions when given, and measured images/s with the
machine it ran on. Prints a table and writes DIR/compare.json, compare.png, gap.png and gallery.html.

    python analysis/compare.py --runs ofa=OUT1 blip=OUT2 --tgt msrvtt --sources S.toml --out DIR \\
        [--refs REFS.jsonl] [--encoder minilm] [--samples 1000] [--repeats 10]

See docs/ANALYSIS.md ("Captioner comparison").
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    # Run as a script: drop analysis/ from sys.path (its module names must not shadow packages).
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    if os.path.dirname(_here) not in sys.path:
        sys.path.append(os.path.dirname(_here))

import argparse
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from analysis.cache import FeatureCache, file_sha256
from analysis.encoders import TextEncoder, load_encoder
from analysis.gallery import GalleryClip, GalleryPage, write_gallery
from analysis.gap import untrained_ids
from analysis.nmi import (
    DEFAULT_SOURCES_FILE,
    NmiConfig,
    add_gap_args,
    config_from_args,
    encoder_from_args,
    run_pairs,
)
from analysis.plots import CompareView, Interval, plot_compare
from analysis.report import UNTRAINED_NOTE, TableRun, detail_line, plot_table, smaller_warning
from analysis.runs import CaptionRun, RunError, middle_frames, open_run, parse_run_arg
from analysis.sources import SourceFormatError, SourceSpec, load_registry
from analysis.textstats import caption_scores, text_stats
from pipeline.atomic import write_bytes_atomic

AGREEMENT_CLIPS = 1000  # clips sampled for the pairwise agreement
GALLERY_CLIPS = 24


def read_refs(path: Path) -> dict[str, list[str]]:
    """Reference captions: JSON lines `{"clip_id", "text": str | [str]}` or one JSON object
    `{clip_id: str | [str]}`. Raises RunError naming the line that is neither."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"--refs {path}: cannot read it as UTF-8 text ({e})") from None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "clip_id" not in whole:
        items = list(whole.items())
    else:
        items = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                items.append((rec["clip_id"], rec["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise RunError(
                    f'--refs {path}:{i}: expected a JSON line {{"clip_id", "text"}} or one JSON object '
                    f"{{clip_id: caption(s)}}, found {line[:60]!r}"
                ) from None
    refs: dict[str, list[str]] = {}
    for cid, val in items:
        vals = [val] if isinstance(val, str) else val
        if (
            not isinstance(cid, str)
            or not isinstance(vals, list)
            or not all(isinstance(v, str) for v in vals)
        ):
            raise RunError(f"--refs {path}: clip {cid!r}: references must be a string or a list of strings")
        refs.setdefault(cid, []).extend(v.strip() for v in vals if v.strip())
    if not refs:
        raise RunError(f"--refs {path}: no reference captions in it")
    return refs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python analysis/compare.py",
        description="Compare captioners on the same clips: language gap to downstream queries (NMI with "
        "CI, MMD), length and vocabulary, agreement, BLEU-4/CIDEr-D against references, images/s; "
        "writes compare.json, compare.png, gap.png and gallery.html under --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="LABEL=PATH",
        help="each captioner's output: the caption job's OUT dir (frames, subtitles, speed) or its "
        "captions.parquet",
    )
    p.add_argument("--tgt", required=True, help="downstream source name(s) in --sources, comma-separated")
    p.add_argument("--sources", type=Path, default=DEFAULT_SOURCES_FILE, help="sources registry TOML")
    p.add_argument(
        "--refs",
        type=Path,
        help='reference captions: JSON lines {"clip_id", "text": str|[str]} or JSON {clip_id: str|[str]}',
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--agreement-clips", type=int, default=AGREEMENT_CLIPS, help="clips sampled for agreement")
    p.add_argument("--gallery-clips", type=int, default=GALLERY_CLIPS, help="clips shown in gallery.html")
    add_gap_args(p)
    return p


def _check(args: argparse.Namespace) -> tuple[list[CaptionRun], dict[str, SourceSpec], list[str], NmiConfig]:
    """Everything the user gave, checked before any work; raises RunError/ValueError/SourceFormatError."""
    cfg = config_from_args(args)
    if args.out.exists() and not args.out.is_dir():
        raise RunError(f"--out {args.out} exists and is not a directory")
    if args.agreement_clips < 1 or args.gallery_clips < 0:
        raise RunError("--agreement-clips must be >= 1 and --gallery-clips >= 0")
    parsed = [parse_run_arg(r) for r in args.runs]
    labels = [label for label, _ in parsed]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise RunError(f"--runs labels must differ; repeated: {dupes}")
    registry = load_registry(args.sources)
    clash = sorted(set(labels) & set(registry))
    if clash:
        raise RunError(f"--runs label(s) {clash} are also source names in {args.sources}; rename them")
    tgts = [t.strip() for t in args.tgt.split(",") if t.strip()]
    for t in tgts or [""]:
        spec = registry.get(t)
        if spec is None:
            raise RunError(f"--tgt {t!r} is not in {args.sources} (sources: {', '.join(sorted(registry))})")
        if not spec.path.is_file():
            raise RunError(f"--tgt {t}: file {spec.path} does not exist")
    runs = [open_run(label, path) for label, path in parsed]
    for run in runs:
        registry[run.label] = SourceSpec(run.label, "captions_parquet", run.captions_file, {})
    return runs, registry, tgts, cfg


def agreement(
    runs: Sequence[CaptionRun], encoder: TextEncoder, cache_root: Path | None, clips: int, seed: int
) -> list[dict[str, Any]]:
    """Per pair of captioners, on a seeded sample of the clips both captioned (non-empty): mean cosine
    of the two captions' features (the gap encoder), and BLEU-4 of each against the other as reference."""
    feats: dict[str, FeatureCache] = {
        r.label: FeatureCache(cache_root, file_sha256(r.captions_file, cache_root), encoder.id) for r in runs
    }
    out = []
    for a, b in itertools.combinations(runs, 2):
        common = sorted(c for c in set(a.captions) & set(b.captions) if a.captions[c] and b.captions[c])
        if len(common) > clips:
            common = sorted(np.random.default_rng(seed).choice(common, clips, replace=False).tolist())
        row: dict[str, Any] = {"a": a.label, "b": b.label, "clips": len(common)}
        if common:
            fa = feats[a.label].features([a.captions[c] for c in common], encoder.encode)
            fb = feats[b.label].features([b.captions[c] for c in common], encoder.encode)
            row["cosine_mean"] = float(np.mean(np.sum(fa * fb, axis=1)))
            pa_, pb_ = {c: a.captions[c] for c in common}, {c: b.captions[c] for c in common}
            row["bleu4_a_vs_b"] = caption_scores(pa_, {c: [v] for c, v in pb_.items()})["bleu4"]
            row["bleu4_b_vs_a"] = caption_scores(pb_, {c: [v] for c, v in pa_.items()})["bleu4"]
        out.append(row)
    return out


def per_captioner(
    runs: Sequence[CaptionRun], table: TableRun, refs: dict[str, list[str]] | None
) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        stats = asdict(text_stats(list(r.captions.values())))
        stats.pop("lengths")
        untrained = untrained_ids(r.captioners)
        rows.append(
            {
                "label": r.label,
                "path": str(r.path),
                "captioners": r.captioners,
                "untrained": bool(untrained),
                "clips": len(r.captions),
                "text": stats,
                "gap": [x.to_json() for x in table.results if x.src == r.label],
                "references": caption_scores(r.captions, refs) if refs else None,
                "speed": r.speed(),
            }
        )
    return rows


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_report(rows: list[dict[str, Any]], table: TableRun, agree: list[dict[str, Any]]) -> list[str]:
    """The printed report: gap per (captioner, target), then text/quality/speed, then agreement."""
    lines = ["gap to downstream queries (NMI k=2, bootstrap CI, k sweep, MMD2 with permutation p):"]
    lines += [detail_line(x) for x in table.results]
    lines += [
        f"  {e.get('source') or e['src'] + ' vs ' + e['tgt']}: error ({e['error']})" for e in table.errors
    ]
    warning = smaller_warning(table.results)
    if warning:
        lines.append(warning)
    head = f"{'captioner':<24}{'clips':>6}{'words':>7}{'vocab':>7}{'dist-1':>8}{'dist-2':>8}"
    lines += ["", head + f"{'BLEU-4':>8}{'CIDEr-D':>9}{'img/s':>8}  machine"]
    for row in rows:
        t, q, s = row["text"], row["references"] or {}, row["speed"]
        name = row["label"] + (" (untrained)" if row["untrained"] else "")
        lines.append(
            f"{name:<24}{row['clips']:>6}{t['words_mean']:>7.1f}{t['vocabulary']:>7}{t['distinct_1']:>8.3f}"
            f"{t['distinct_2']:>8.3f}{_f(q.get('bleu4')):>8}{_f(q.get('cider_d')):>9}"
            f"{_f(s['caption_images_per_s'], 1):>8}  {s['machine']}"
        )
    for a in agree:
        lines.append(
            f"agreement {a['a']} ~ {a['b']} on {a['clips']} clips: cosine {_f(a.get('cosine_mean'))}, "
            f"BLEU-4 {a['a']}->{a['b']} {_f(a.get('bleu4_a_vs_b'))}, {a['b']}->{a['a']} {_f(a.get('bleu4_b_vs_a'))}"
        )
    return lines


def gallery_clips(
    runs: Sequence[CaptionRun], n: int, seed: int, refs: dict[str, list[str]] | None
) -> list[GalleryClip]:
    """A seeded sample of n clips captioned by every run, with the middle frame from the first OUT dir
    that has it, the subtitle from the shards and each captioner's caption."""
    common = sorted(set.intersection(*(set(r.captions) for r in runs)))
    if len(common) > n:
        common = sorted(np.random.default_rng(seed).choice(common, n, replace=False).tolist())
    frames: dict[str, bytes] = {}
    for r in runs:
        if r.out_dir is None:
            continue
        want = {r.keys[c] for c in common if r.keys.get(c) and r.keys[c] not in frames}
        frames.update(middle_frames(r.out_dir, want) if want else {})
    subtitles: dict[str, str] = {}
    for r in runs:
        for c, s in r.subtitles.items():
            subtitles.setdefault(c, s)
    key_of = {c: next((r.keys[c] for r in runs if r.keys.get(c)), "") for c in common}
    return [
        GalleryClip(
            clip_id=c,
            frame=frames.get(key_of[c]),
            subtitle=subtitles.get(c),
            refs=(refs or {}).get(c, []),
            captions={r.label: r.captions[c] for r in runs},
        )
        for c in common
    ]


def _interval(x: dict[str, Any], key: str) -> Interval:
    return Interval(x[f"{key}_mean"], x[f"{key}_ci"], x["samples"])


def compare_view(runs: Sequence[CaptionRun], rows: list[dict[str, Any]], tgts: list[str]) -> CompareView:
    machines = sorted({row["speed"]["machine"] for row in rows})
    return CompareView(
        labels=[r.label for r in runs],
        targets=tgts,
        nmi={(row["label"], g["tgt"]): _interval(g, "nmi") for row in rows for g in row["gap"]},
        mmd={(row["label"], g["tgt"]): _interval(g, "mmd2") for row in rows for g in row["gap"]},
        lengths={r.label: text_stats(list(r.captions.values())).lengths for r in runs},
        distinct={row["label"]: (row["text"]["distinct_1"], row["text"]["distinct_2"]) for row in rows},
        scores={
            row["label"]: (
                {"BLEU-4": row["references"]["bleu4"], "CIDEr-D": row["references"]["cider_d"]}
                if row["references"] and row["references"]["clips"]
                else {}
            )
            for row in rows
        },
        images_per_s={row["label"]: row["speed"]["caption_images_per_s"] for row in rows},
        machine="machine: " + "; ".join(machines),
        names={row["label"]: row["label"] + (" (untrained)" if row["untrained"] else "") for row in rows},
    )


def numbers_table(rows: list[dict[str, Any]], tgts: list[str]) -> tuple[list[str], list[list[str]]]:
    """The gallery's table: one row per captioner."""
    header = ["captioner", "model"]
    for t in tgts:
        header += [f"NMI vs {t} [CI]", f"MMD² vs {t} (p)"]
    header += ["words", "vocab", "distinct-1", "distinct-2", "BLEU-4", "CIDEr-D", "images/s", "machine"]
    table = []
    for row in rows:
        cells = [row["label"] + (" (untrained)" if row["untrained"] else ""), ", ".join(row["captioners"])]
        gap = {g["tgt"]: g for g in row["gap"]}
        for t in tgts:
            g = gap.get(t)
            if g is None:
                cells += ["error", "error"]
                continue
            ci = "" if g["nmi_ci"] is None else f" [{g['nmi_ci'][0]:.3f}, {g['nmi_ci'][1]:.3f}]"
            p = "" if g["mmd_p"] is None else f" (p={g['mmd_p']:.3g})"
            cells += [f"{g['nmi_mean']:.3f}{ci} n={g['samples']}", f"{g['mmd2_mean']:.4f}{p}"]
        t, q, s = row["text"], row["references"] or {}, row["speed"]
        cells += [
            f"{t['words_mean']:.1f}",
            str(t["vocabulary"]),
            f"{t['distinct_1']:.3f}",
            f"{t['distinct_2']:.3f}",
        ]
        cells += [_f(q.get("bleu4")), _f(q.get("cider_d")), _f(s["caption_images_per_s"], 1), s["machine"]]
        table.append(cells)
    return header, table


def main(
    argv: Sequence[str] | None = None, encoder_factory: Callable[..., TextEncoder] = load_encoder
) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs, registry, tgts, cfg = _check(args)
        refs = read_refs(args.refs) if args.refs else None
    except (RunError, ValueError, SourceFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        encoder, cache_root = encoder_from_args(args, encoder_factory)
        pairs = [(r.label, t) for t in tgts for r in runs]
        table = run_pairs(pairs, registry, encoder, args.encoder, cfg, cache_root, skip_missing=True)
        agree = agreement(runs, encoder, cache_root, args.agreement_clips, cfg.seed)
    except (SourceFormatError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = per_captioner(runs, table, refs)
    untrained = table.untrained(encoder.id)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    title = f"Captioner comparison vs {', '.join(tgts)}; encoder {encoder.id}"
    banner = f"UNTRAINED model(s): {', '.join(untrained)} ({UNTRAINED_NOTE})" if untrained else ""
    report = format_report(rows, table, agree)
    print("\n".join(([banner] if banner else []) + report))
    obj = {
        "targets": tgts,
        "encoder": args.encoder,
        "encoder_id": encoder.id,
        "samples_requested": cfg.samples,
        "repeats": cfg.repeats,
        "seed": cfg.seed,
        "k_sweep": list(cfg.k_sweep),
        "ci_level": cfg.ci_level,
        "warnings": [w for w in [smaller_warning(table.results)] if w],
        "untrained": bool(untrained),
        "untrained_models": untrained,
        "captioners": rows,
        "agreement": agree,
        "agreement_measure": "mean cosine of the two captions' encoder features; corpus BLEU-4 of one "
        "captioner against the other as the single reference (pycocoevalcap)",
        "reference_metrics": "pycocoevalcap Bleu(4) and Cider (CIDEr-D), lower-cased word tokens",
        "errors": table.errors,
        "sources": table.sources,
    }
    write_bytes_atomic(out / "compare.json", (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())
    view = compare_view(runs, rows, tgts)
    figures = [
        (
            "compare.png: per captioner (colour): gap to the downstream queries, caption length, "
            "vocabulary, reference scores, measured speed",
            plot_compare(out / "compare.png", view, (banner + "\n" if banner else "") + title),
        )
    ]
    if table.results:
        figures.append(
            (
                "gap.png: PCA of draw 0 per captioner (grey = captions, colour = downstream queries, "
                "marker = k-means cluster) and NMI with its bootstrap interval",
                plot_table(out / "gap.png", table, encoder.id, cfg.kmeans.k),
            )
        )
    clips = gallery_clips(runs, args.gallery_clips, cfg.seed, refs)
    labels = [r.label for r in runs]
    numbers = numbers_table(rows, tgts)
    figs = [(caption, path.read_bytes()) for caption, path in figures]
    page = GalleryPage(title, banner, numbers, report, figs, clips, labels, view.names)
    gallery = write_gallery(out / "gallery.html", page)
    print(f"wrote {out / 'compare.json'}, " + ", ".join(str(f) for _, f in figures) + f", {gallery}")
    return 1 if table.errors else 0


if __name__ == "__main__":
    sys.exit(main())
