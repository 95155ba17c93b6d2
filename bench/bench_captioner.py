"""Benchmark the OFA captioner at the OFA-large shape (random weights; no checkpoint needed).

CPU: the encoder (ResNet-152 stages + 12 layers over 900 image + 8 text tokens) is measured per image; the
beam search (beam 5, 16 tokens + EOS, trigram blocking) is measured at batch 1, 8, 32 from an encoder output of
the real shape, with the incremental KV cache and, as the baseline, recomputing the whole prefix every step.
End-to-end images/s = 1 / (encoder s/image + beam search s/image).
GPU (when CUDA is available): end-to-end (preprocessed 480x480 tensors -> captions' tokens) in fp16 and bf16
at larger batches, against the physical estimate from the FLOP count and the device's peak.

    python bench/bench_captioner.py [--quick] [--gpu-batches 32,64,128] [--peak-tflops 989]

Writes docs/bench/captioner.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from machine import cpu_name, load_average

from captioner.ofa import OFA, GenerationConfig, OFAConfig, beam_search, large_config
from captioner.ofa.generate import beam_search_encoded
from captioner.ofa.interface import EncoderOut

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "bench" / "captioner.md"
PROMPT_LEN = 8  # bos + " what does the image describe?" + eos
H100_DENSE_FP16_TFLOPS = 989.0  # H100 SXM dense fp16/bf16 tensor-core peak (NVIDIA datasheet)


def random_init_(model: OFA, seed: int = 0) -> OFA:
    """Plausible random weights: He convs, N(0, 0.02) matrices, unit norms, BN identity statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                std = (2.0 / (module.out_channels * module.kernel_size[0] * module.kernel_size[1])) ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * std)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.reset_running_stats()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.02)
                bias = getattr(module, "bias", None)
                if isinstance(bias, torch.Tensor):
                    bias.zero_()
        for name, p in model.named_parameters():
            if name.endswith("c_attn"):
                p.fill_(1.0)
    return model


def large_random_model(dtype: torch.dtype, device: str, seed: int = 0) -> OFA:
    model = OFA.empty(large_config(), torch.float32, "cpu")
    return random_init_(model, seed).to(device, dtype).eval()


# ---------------------------------------------------------------- FLOP count (multiply-add = 2 FLOPs)
def resnet_flops(cfg: OFAConfig) -> float:
    """Convolution FLOPs of the image embedder at cfg.patch_image_size, from output shapes on the meta device."""
    with torch.device("meta"):
        model = OFA(cfg)
    total = 0.0

    def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Conv2d)
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total += 2.0 * out.numel() * k

    for m in model.encoder.embed_images.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    size = cfg.patch_image_size
    model.encoder.embed_images(torch.empty(1, 3, size, size, device="meta"))
    return total


def flops_per_image(cfg: OFAConfig, beam: int = 5, steps: int = 17) -> dict[str, float]:
    """Encoder, cross K/V and cached beam-search FLOPs of one image (all `steps` decoder steps run)."""
    d, f, v = cfg.embed_dim, cfg.ffn_dim, cfg.vocab_size
    s = cfg.image_grid**2 + PROMPT_LEN
    enc_layer = s * (2 * 4 * d * d + 2 * 2 * d * f) + 2 * 2 * s * s * d
    resnet = resnet_flops(cfg)
    encoder = resnet + s * 2 * 1024 * d + cfg.encoder_layers * enc_layer
    cross_kv = cfg.decoder_layers * s * 2 * 2 * d * d
    per_token = cfg.decoder_layers * (2 * 6 * d * d + 2 * 2 * d * f + 2 * 2 * s * d) + 2 * d * v
    self_attn = sum(cfg.decoder_layers * 2 * 2 * (t + 1) * d for t in range(steps))
    decoder = beam * (steps * per_token + self_attn)
    return {
        "resnet": resnet,
        "encoder": encoder,
        "cross_kv": cross_kv,
        "decoder": decoder,
        "total": encoder + cross_kv + decoder,
    }


# ---------------------------------------------------------------- timing
def timed(fn: Callable[[], object], sync: Callable[[], None] = lambda: None, repeats: int = 1) -> float:
    """Best wall time of `repeats` runs (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def fake_encoder_out(cfg: OFAConfig, batch: int, dtype: torch.dtype, device: str) -> EncoderOut:
    """An encoder output of the real shape (900 image + 8 text tokens) for timing the decoder alone."""
    g = torch.Generator().manual_seed(1)
    s = cfg.image_grid**2 + PROMPT_LEN
    x = torch.randn(batch, s, cfg.embed_dim, generator=g).to(device, dtype)
    pos = torch.randn(s, cfg.embed_dim, generator=g).to(device, dtype)
    return EncoderOut(x, torch.zeros(batch, s, dtype=torch.bool, device=device), pos)


def src_tokens(batch: int, device: str) -> torch.Tensor:
    return torch.tensor([[0, 99, 473, 5, 2274, 6190, 116, 2]] * batch, device=device)


def bench_cpu(quick: bool) -> list[str]:
    torch.set_flush_denormal(True)
    cfg = large_config()
    model = large_random_model(torch.float32, "cpu")
    size = cfg.patch_image_size
    lines = []
    enc_batch = 1
    images = torch.randn(enc_batch, 3, size, size)
    with torch.no_grad():
        t_enc = timed(lambda: model.encode(src_tokens(enc_batch, "cpu"), images)) / enc_batch
    print(f"cpu encoder: {t_enc:.2f} s/image", flush=True)
    batches = [1, 8] if quick else [1, 8, 32]
    warm = fake_encoder_out(cfg, 1, torch.float32, "cpu")
    for use_cache in (True, False):  # first-touch of the decoder weights and kernel set-up, not timed
        beam_search_encoded(model, warm, GenerationConfig(max_len=2, use_cache=use_cache))
    rows = []
    for b in batches:
        enc = fake_encoder_out(cfg, b, torch.float32, "cpu")
        results = {}
        steps: list[int] = []  # decoder steps actually run (longest hypothesis)
        for use_cache in (True, False):
            if not use_cache and b > (1 if quick else 8):
                continue  # the recompute baseline is too slow on CPU at large batches; measured where it fits
            gen = GenerationConfig(use_cache=use_cache)

            def run(gen: GenerationConfig = gen, enc: EncoderOut = enc, steps: list[int] = steps) -> None:
                hyps = beam_search_encoded(model, enc, gen)
                steps.append(max(len(h.tokens) for s in hyps for h in s))

            results[use_cache] = timed(run, repeats=2 if b == 1 else 1) / b
            print(f"cpu beam search b={b} cache={use_cache}: {results[use_cache]:.2f} s/image", flush=True)
        ran = max(steps)
        cached = results[True]
        base = results.get(False)
        e2e = 1.0 / (t_enc + cached)
        rows.append(
            f"| {b} | {ran} | {t_enc:.2f} | {cached:.2f} | "
            + (f"{base:.2f} | {base / cached:.2f}x" if base is not None else "not run | -")
            + f" | {e2e:.3f} |"
        )
    fl = flops_per_image(cfg)
    lines += [
        f"### CPU ({cpu_name()}, {torch.get_num_threads()} threads, fp32)",
        "",
        "Encoder measured at batch 1 (its cost per image does not depend on the batch on CPU). Beam search",
        "(beam 5, 16 tokens + EOS, trigram blocking; with random weights EOS rarely wins, so close to all 17 steps",
        "run: see the steps column) from an encoder output of the real shape. Baseline: no KV cache (the whole",
        "prefix is recomputed every step).",
        "",
        "| batch | decoder steps | encoder s/image | beam search s/image (KV cache) | no cache s/image "
        "| cache speed-up | end-to-end images/s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"FLOPs per image (analytic): encoder {fl['encoder'] / 1e9:.0f} G (ResNet {fl['resnet'] / 1e9:.0f} G), "
        f"cross-attention K/V {fl['cross_kv'] / 1e9:.0f} G, beam search {fl['decoder'] / 1e9:.0f} G; "
        f"total {fl['total'] / 1e12:.2f} TFLOP.",
        "",
    ]
    return lines


def _gpu_row(model: OFA, cfg: OFAConfig, batch: int, repeats: int, flops: float, bound: float) -> str:
    dev, dtype = "cuda", model.dtype
    name = str(dtype).removeprefix("torch.")
    images = torch.randn(batch, 3, cfg.patch_image_size, cfg.patch_image_size, device=dev, dtype=dtype)
    src = src_tokens(batch, dev)
    gen = GenerationConfig()
    try:
        beam_search(model, src, images, None, gen)  # warm-up (cudnn autotune, allocator)
        t = timed(lambda: beam_search(model, src, images, None, gen), torch.cuda.synchronize, repeats)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return f"| {name} | {batch} | out of memory | | |"
    ips = batch / t
    return f"| {name} | {batch} | {ips:.1f} | {ips * flops / 1e12:.0f} | {ips / bound:.1%} |"


def bench_gpu(batches: list[int], peak_tflops: float, quick: bool) -> list[str]:
    torch.backends.cudnn.benchmark = True
    cfg = large_config()
    fl = flops_per_image(cfg)
    bound = peak_tflops * 1e12 / fl["total"]
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        model = large_random_model(dtype, "cuda")
        for b in batches:
            rows.append(_gpu_row(model, cfg, b, 1 if quick else 3, fl["total"], bound))
            print(rows[-1], flush=True)
        del model
        torch.cuda.empty_cache()
    return [
        f"### GPU ({torch.cuda.get_device_name()}, CUDA {torch.version.cuda})",
        "",
        f"End-to-end from preprocessed 480x480 tensors: encoder + beam search (beam 5, up to 17 steps, KV cache). "
        f"Physical estimate: {fl['total'] / 1e12:.2f} TFLOP per image at a {peak_tflops:.0f} TFLOP/s peak "
        f"= {bound:.0f} images/s upper bound. Goal on one H100: >= 200 images/s.",
        "",
        "| dtype | batch | images/s | achieved TFLOP/s | of the physical bound |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU batches 1 and 8 only; one GPU repeat")
    ap.add_argument("--gpu-batches", default="32,64,128")
    ap.add_argument(
        "--peak-tflops", type=float, default=H100_DENSE_FP16_TFLOPS, help="dense fp16 peak of the GPU"
    )
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU section (e.g. on a GPU machine)")
    ap.add_argument(
        "--threads", type=int, help="CPU threads (default: torch's default); on a loaded machine 1 wins"
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    load = load_average()
    lines = [
        "## Captioner (OFA-large shape, random weights)",
        "",
        f"{dt.date.today().isoformat()}; {cpu_name()}, {os.cpu_count()} cores (1-min load average {load:.1f} "
        f"at the start: other processes shared the CPU); torch {torch.__version__}. "
        "Run: `python bench/bench_captioner.py"
        + (" --quick" if args.quick else "")
        + (f" --threads {args.threads}" if args.threads else "")
        + "`.",
        "",
    ]
    if not args.no_cpu:
        lines += bench_cpu(args.quick)
    if torch.cuda.is_available():
        lines += bench_gpu([int(b) for b in args.gpu_batches.split(",")], args.peak_tflops, args.quick)
    else:
        lines += ["### GPU", "", "Not measured: no CUDA device in this run.", ""]
    lines += [f"Total benchmark time {time.time() - t0:.0f} s.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
