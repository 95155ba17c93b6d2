"""Benchmark of the NMI analysis (CPU): encoder throughput and the wall time of `--all` at the paper's sizes.

    python bench/bench_nmi.py [--quick]

Measures, each against a baseline taken in the same run:
- minilm texts/s (ours: transformers + mean pooling) vs sentence-transformers' own `encode`;
- clip texts/s for a ViT-B/32-shaped random text tower (width 512, 12 layers, 77 tokens) through the
  project's tower vs transformers' `CLIPTextModelWithProjection` of the same shape;
- `python analysis/nmi.py --all --encoder minilm` at 1000 samples x 10 repeats on generated sources:
  cold feature cache vs warm (second run), and faiss vs scikit-learn k-means per clustering.
Writes docs/bench/nmi.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from machine import load_average, machine_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from analysis.clustering import KMeansConfig, kmeans_labels
from analysis.encoders import ClipTextEncoder, EncodeOptions, MiniLMEncoder, minilm_model_dir
from analysis.nmi import main as nmi_main
from synthetic import texts as synthetic

REPO = Path(__file__).resolve().parents[1]


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


def rate(fn, texts: list[str]) -> float:
    fn(texts[:32])  # warm-up
    t0 = time.perf_counter()
    fn(texts)
    return len(texts) / (time.perf_counter() - t0)


def bench_minilm(texts: list[str]) -> tuple[float, float]:
    ours = MiniLMEncoder(opts=EncodeOptions(batch_size=64, progress=False))
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_model_dir()), device="cpu", local_files_only=True)
    return rate(ours.encode, texts), rate(
        lambda t: st.encode(t, batch_size=64, normalize_embeddings=True, show_progress_bar=False), texts
    )


def bench_clip(texts: list[str]) -> tuple[float, float]:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from trainer.model import CLIPViP, tiny_config
    from trainer.model.tokenizer import build_tiny_tokenizer, load_clip_tokenizer
    from trainer.model.weights import hf_config_dict

    # B/32 text tower shape. The tokenizer is a small BPE in CLIP's format: every text is padded to 77
    # tokens anyway, so the tower's cost does not depend on the vocabulary the ids come from.
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
    ours = ClipTextEncoder(
        CLIPViP(cfg), tok, weights_sha256="0" * 64, opts=EncodeOptions(batch_size=64, progress=False)
    )
    # the same text tower as transformers builds it, from the HF config our weights module writes
    hf = CLIPTextModelWithProjection(CLIPTextConfig(**hf_config_dict(cfg)["text_config"])).eval()

    def hf_encode(batch: list[str]) -> None:
        with torch.inference_mode():
            for i in range(0, len(batch), 64):
                ids, mask = tok(batch[i : i + 64], max_length=77)
                torch.nn.functional.normalize(hf(input_ids=ids, attention_mask=mask).text_embeds, dim=-1)

    return rate(ours.encode, texts), rate(hf_encode, texts)


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
    n_texts, n_clip, samples, repeats, per_source = (
        (128, 32, 200, 2, 400) if args.quick else (1024, 128, 1000, 10, 2000)
    )
    desc = machine()
    print(desc, flush=True)
    texts = texts_for_bench(n_texts)
    m_ours, m_base = bench_minilm(texts)
    print(f"minilm: {m_ours:.0f} texts/s (sentence-transformers {m_base:.0f})", flush=True)
    c_ours, c_base = bench_clip(texts[:n_clip])
    print(f"clip B/32 text tower: {c_ours:.0f} texts/s (transformers {c_base:.0f})", flush=True)
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

| Encoder (CPU, batch 64, generated texts) | ours texts/s | baseline | baseline texts/s | ratio ours/baseline |
|---|---:|---|---:|---:|
| minilm (all-MiniLM-L6-v2), {n_texts} texts | {m_ours:.0f} | sentence-transformers `encode` | {m_base:.0f} | {m_ours / m_base:.2f} |
| clip (B/32-shaped random text tower, 77 tokens), {n_clip} texts | {c_ours:.0f} | transformers `CLIPTextModelWithProjection` | {c_base:.0f} | {c_ours / c_base:.2f} |

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
