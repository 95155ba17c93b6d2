"""Benchmark of the NMI analysis (CPU): encoder throughput and the wall time of `--all` at the paper's sizes.

    python bench/bench_nmi.py [--quick]

Measures, each against a baseline taken in the same run:
- minilm texts/s (ours: packed, padding-free forward + mean pooling) vs sentence-transformers' own
  `encode`, same model and batch;
- clip texts/s for a ViT-B/32-shaped random text tower (width 512, 12 layers, 77 positions) through
  the project's tower vs transformers' `CLIPTextModelWithProjection` holding the same weights: the
  paper's 77-token protocol, and padded to each batch's longest text;
- for each, ours and the baseline alternate on the same texts (medians of the repeats) and their
  embeddings are compared element-wise (exit 1 when they differ by more than 1e-5);
- `python analysis/nmi.py --all --encoder minilm` at 1000 samples x 10 repeats on generated sources:
  cold feature cache vs warm (second run), and faiss vs scikit-learn k-means per clustering.
Writes docs/bench/nmi.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.machine import load_average, machine_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from analysis.clustering import KMeansConfig, kmeans_labels
from analysis.encoders import ClipTextEncoder, EncodeOptions, MiniLMEncoder, minilm_model_dir
from analysis.nmi import main as nmi_main
from synthetic import texts as synthetic
from trainer.model.encoder import init_clip_weights

REPO = Path(__file__).resolve().parents[1]
BATCH = 64
EQUAL_TOL = 1e-5  # ours vs the library baseline, max abs difference of L2-normalised embeddings


def machine() -> str:
    return machine_line(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        f"load average {load_average():.1f} at start",
    )


def texts_for_bench(n: int) -> list[str]:
    """A mix of every generated style, made unique so nothing is deduplicated away."""
    styles = list(synthetic.STYLES)
    per = n // len(styles) + 1
    mixed = [t for s in styles for t in synthetic.generate(s, per, seed=7)]
    return [f"{t} {i}" for i, t in enumerate(mixed[:n])]


@dataclass
class Duel:
    """Ours vs a baseline on the same texts, timed in alternation (ABAB...): wall and CPU seconds."""

    ours_wall: list[float] = field(default_factory=list)
    base_wall: list[float] = field(default_factory=list)
    ours_cpu: list[float] = field(default_factory=list)
    base_cpu: list[float] = field(default_factory=list)
    max_abs_diff: float = 0.0

    def rate(self, n: int, which: str) -> float:
        return n / statistics.median(getattr(self, f"{which}_wall"))

    def ratio(self, clock: str) -> float:
        """Median over repeats of baseline time / our time (> 1: ours is faster)."""
        ours, base = getattr(self, f"ours_{clock}"), getattr(self, f"base_{clock}")
        return statistics.median(b / o for o, b in zip(ours, base))


def duel(
    ours: Callable[[list[str]], np.ndarray],
    base: Callable[[list[str]], np.ndarray],
    texts: list[str],
    repeats: int,
) -> Duel:
    """Warm both up, then alternate them `repeats` times (who goes first alternates too, so drifting
    load hits both alike); the embeddings of the last pair are compared element-wise."""
    ours(texts[:8]), base(texts[:8])
    d = Duel()
    for r in range(repeats):
        for which in ("ours", "base") if r % 2 == 0 else ("base", "ours"):
            fn = ours if which == "ours" else base
            w0, c0 = time.perf_counter(), time.process_time()
            out = fn(texts)
            getattr(d, f"{which}_wall").append(time.perf_counter() - w0)
            getattr(d, f"{which}_cpu").append(time.process_time() - c0)
            if which == "ours":
                ours_out = out
            else:
                base_out = out
    d.max_abs_diff = float(np.abs(ours_out - base_out).max())
    return d


def bench_minilm(texts: list[str], repeats: int) -> Duel:
    from sentence_transformers import SentenceTransformer

    ours = MiniLMEncoder(opts=EncodeOptions(batch_size=BATCH, progress=False))
    st = SentenceTransformer(str(minilm_model_dir()), device="cpu", local_files_only=True)
    return duel(
        ours.encode,
        lambda t: st.encode(t, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False),
        texts,
        repeats,
    )


def bench_clip(texts: list[str], repeats: int) -> tuple[Duel, Duel]:
    """Ours vs transformers with the same weights: (77-token protocol, padded to each batch's longest)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from trainer.model import tiny_config
    from trainer.model.text import CLIPTextModel
    from trainer.model.tokenizer import build_tiny_tokenizer, load_clip_tokenizer
    from trainer.model.weights import hf_config_dict

    # B/32 text tower shape. The tokenizer is a small BPE in CLIP's format: the tower's cost does not
    # depend on the vocabulary the ids come from, only on the number of tokens.
    with tempfile.TemporaryDirectory(prefix="bench_nmi_tok_") as tok_dir:
        tok = load_clip_tokenizer(build_tiny_tokenizer(texts, tok_dir, num_merges=500))
    cfg = tiny_config(
        text_vocab=49408,
        text_width=512,
        text_layers=12,
        text_heads=8,
        text_context_length=77,
        text_intermediate_size=2048,
        projection_dim=512,
        text_bos_token_id=tok.bos_id,
        text_eos_token_id=tok.eot_id,
        text_pad_token_id=tok.eot_id,
    )
    torch.manual_seed(0)
    tower = CLIPTextModel(cfg.text)
    init_clip_weights(tower)
    projection = torch.nn.Linear(cfg.text.width, cfg.projection_dim, bias=False)
    ours = ClipTextEncoder(tower, projection, tok, "0" * 64, EncodeOptions(batch_size=BATCH, progress=False))
    # transformers' own text tower (from the HF config our weights module writes), our weights copied in
    hf = CLIPTextModelWithProjection(CLIPTextConfig(**hf_config_dict(cfg)["text_config"])).eval()
    hf.text_model.load_state_dict(tower.state_dict())
    hf.text_projection.load_state_dict(projection.state_dict())

    def hf_encode(batch: list[str], trim: bool) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(batch), BATCH):
                ids, mask = tok(batch[i : i + BATCH], max_length=77)
                if trim:  # what `padding=True` gives: the batch's longest text, in the order given
                    n = int(mask.sum(1).max())
                    ids, mask = ids[:, :n], mask[:, :n]
                feats = hf(input_ids=ids, attention_mask=mask).text_embeds
                out.append(torch.nn.functional.normalize(feats, dim=-1).numpy())
        return np.concatenate(out)

    protocol = duel(ours.encode, lambda t: hf_encode(t, trim=False), texts, repeats)
    longest = duel(ours.encode, lambda t: hf_encode(t, trim=True), texts, repeats)
    return protocol, longest


def duel_line(name: str, n: int, baseline: str, d: Duel) -> str:
    return (
        f"{name}: {d.rate(n, 'ours'):.0f} texts/s vs {baseline} {d.rate(n, 'base'):.0f}: "
        f"ratio {d.ratio('wall'):.2f} (CPU {d.ratio('cpu'):.2f}), max |diff| {d.max_abs_diff:.1e}"
    )


def table_rows(rows: list[tuple[str, int, str, Duel]]) -> str:
    return "\n".join(
        f"| {name} | {n} | {baseline} | {d.rate(n, 'ours'):.0f} | {d.rate(n, 'base'):.0f} | "
        f"{d.ratio('wall'):.2f} | {d.ratio('cpu'):.2f} | {d.max_abs_diff:.1e} |"
        for name, n, baseline, d in rows
    )


def bench_all(samples: int, repeats: int, per_source: int, work: Path) -> dict[str, float]:
    toml = synthetic.write_sources(work / "sources", n=per_source, seed=0)
    args = [
        "--all",
        "--sources",
        str(toml),
        "--encoder",
        "minilm",
        "--samples",
        str(samples),
        "--repeats",
        str(repeats),
        "--cache-dir",
        str(work / "cache"),
        "--out",
        str(work / "table.json"),
        "--no-progress",
        "-q",
    ]
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # keep the bench's own output readable
        t0 = time.perf_counter()
        assert nmi_main(args) == 0
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert nmi_main(args) == 0
        warm = time.perf_counter() - t0
    print(printed.getvalue().split("wrote")[0].rstrip(), flush=True)
    x = np.random.default_rng(0).normal(size=(2 * samples, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    timings = {}
    for backend in ("faiss", "sklearn"):
        t0 = time.perf_counter()
        for seed in range(3):
            kmeans_labels(x, seed, KMeansConfig(backend=backend))
        timings[backend] = (time.perf_counter() - t0) / 3
    return {"cold": cold, "warm": warm, "faiss": timings["faiss"], "sklearn": timings["sklearn"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "nmi.md")
    args = ap.parse_args(argv)
    # A B/32 text tower runs a few texts/s on a 2-core CPU, so it gets fewer texts than MiniLM.
    n_texts, n_clip, enc_repeats, samples, repeats, per_source = (
        (128, 32, 3, 200, 2, 400) if args.quick else (512, 128, 5, 1000, 10, 2000)
    )
    desc = machine()
    print(desc, flush=True)
    texts = texts_for_bench(n_texts)
    rows = [
        (
            "minilm (all-MiniLM-L6-v2)",
            n_texts,
            "sentence-transformers `encode`",
            bench_minilm(texts, enc_repeats),
        )
    ]
    print(duel_line(*rows[-1]), flush=True)
    protocol, longest = bench_clip(texts[:n_clip], enc_repeats)
    clip = "clip (B/32-shaped random text tower)"
    rows.append((clip, n_clip, "transformers `CLIPTextModelWithProjection`, 77-token protocol", protocol))
    print(duel_line(*rows[-1]), flush=True)
    rows.append((clip, n_clip, "the same, padded to each batch's longest text", longest))
    print(duel_line(*rows[-1]), flush=True)
    unequal = [r for r in rows if not r[3].max_abs_diff <= EQUAL_TOL]
    with tempfile.TemporaryDirectory(prefix="bench_nmi_") as tmp:
        a = bench_all(samples, repeats, per_source, Path(tmp))
    print(
        f"--all: cold {a['cold']:.1f} s, warm {a['warm']:.1f} s; k-means faiss {a['faiss'] * 1e3:.0f} ms, "
        f"sklearn {a['sklearn'] * 1e3:.0f} ms",
        flush=True,
    )
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md = f"""## NMI analysis (`bench/bench_nmi.py{" --quick" if args.quick else ""}`)

{date}; {desc}. A load average above the core count means the machine was shared with other jobs:
absolute rates then vary several-fold between runs, the ratios measured in the same run much less.

Encoders: batch {BATCH}, generated texts of every style (7 to 19 tokens), ours and the baseline run in
alternation {enc_repeats} times on the same texts; rates are medians, ratios the median of the per-repeat
ratios (baseline time / ours), by wall clock and by process CPU time (steadier on a shared machine);
max |diff| compares the two embeddings element-wise (goal <= {EQUAL_TOL:g}).

| Encoder (CPU) | texts | baseline | ours texts/s | baseline texts/s | ratio (wall) | ratio (CPU) | max \\|diff\\| |
|---|---:|---|---:|---:|---:|---:|---:|
{table_rows(rows)}

| `--all --encoder minilm`, {samples} samples x {repeats} repeats, 7 generated sources of {per_source} texts (10 pairs) | seconds |
|---|---:|
| first run (encode + cluster + plot) | {a["cold"]:.1f} |
| second run (feature cache warm) | {a["warm"]:.1f} |
| ratio first/second | {a["cold"] / a["warm"]:.1f} |
| one k-means, faiss spherical ({2 * samples} x 384, nredo 5, 1 thread) | {a["faiss"]:.3f} |
| one k-means, scikit-learn baseline (n_init 5) | {a["sklearn"]:.3f} |
| ratio sklearn/faiss | {a["sklearn"] / a["faiss"]:.1f} |

The generated sources repeat phrases, so the cold run encodes fewer unique texts than real data would
(at most samples x repeats per source); scale the first-run time by the encoder rate above for real files.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    print(f"wrote {args.out}")
    if unequal:
        print(f"embeddings differ by more than {EQUAL_TOL:g}: {[r[0] for r in unequal]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
