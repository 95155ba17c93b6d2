"""Benchmark every captioner family end to end (uint8 720p frames -> caption tokens), random weights.

Families: OFA (large shape, 473M), BLIP (large shape, ViT-L/16 at 384 + BERT-base decoder), Florence-2 (base
shape, DaViT at 768 + BART-base). Random weights never emit EOS, so every family decodes the same 16 tokens
(OFA: 16 + EOS) with its own beam (OFA 5, BLIP 3, Florence-2 3): an upper bound of the decoding cost of real
captions, equal across families.

CPU, fp32: the full shapes at batch 1, and at batches 1/16/64 a reduced shape (input side / 2, depths cut to
a quarter or a third, widths and vocabularies kept) that a shared 2-core machine can run at batch 64; images/s at batch b against
batch 1 of the same shape. GPU (when CUDA is available): the full shapes in fp16 and bf16 at batches 1/16/64,
and OFA against the physical estimate from its FLOP count and the device's peak.

    python bench/bench_captioner.py [--quick] [--threads 1] [--kv-cache] [--peak-tflops 989]

Writes docs/bench/captioner.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from transformers import BlipConfig, Florence2Config
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from captioner.devices import dtype_name
from captioner.hf.captioner import Family, HFCaptioner
from captioner.hf.families import BLIP, FLORENCE2
from captioner.hf.tiny import tiny_bart_tokenizer, tiny_bert_tokenizer
from captioner.ofa import OFA, GenerationConfig, OFAConfig, beam_search, large_config
from captioner.ofa.generate import beam_search_encoded
from captioner.ofa.interface import EncoderOut
from captioner.ofa.preprocess import preprocess
from pipeline.machine import cpu_name, load_average

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


def large_random_model(dtype: torch.dtype, device: str, seed: int = 0, **shape: int) -> OFA:
    model = OFA.empty(large_config(**shape), torch.float32, "cpu")
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


# ---------------------------------------------------------------- the families, end to end
NEW_TOKENS = 16  # every family decodes this many tokens (random weights never emit EOS)
BATCHES = (1, 16, 64)


@dataclass
class Runner:
    """One family at one shape: `run(frames)` captions a batch end to end (tokens, not text)."""

    name: str
    params: int
    side: int  # model input side
    beam: int
    run: Callable[[list[np.ndarray]], object]


def ofa_runner(reduced: bool, dtype: torch.dtype, device: str) -> Runner:
    shape = {"encoder_layers": 3, "decoder_layers": 3, "patch_image_size": 240} if reduced else {}
    model = large_random_model(dtype, device, **shape)
    cfg, gen = model.cfg, GenerationConfig(max_len=NEW_TOKENS)

    def run(frames: list[np.ndarray]) -> object:
        pixels = preprocess(frames, cfg.patch_image_size, device).to(dtype)
        return beam_search(model, src_tokens(len(frames), device), pixels, None, gen)

    n = sum(p.numel() for p in model.parameters())
    return Runner("OFA-large" + (" reduced" if reduced else ""), n, cfg.patch_image_size, gen.beam, run)


def _blip_model(reduced: bool, tokenizer: object) -> tuple[nn.Module, int]:
    ids = tokenizer.get_vocab()  # type: ignore[attr-defined]
    side = 192 if reduced else 384
    cfg = BlipConfig(  # Salesforce/blip-image-captioning-large
        vision_config=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=6 if reduced else 24,
            num_attention_heads=16,
            image_size=side,
            patch_size=16,
        ),
        text_config=dict(
            vocab_size=30524,
            num_hidden_layers=3 if reduced else 12,
            encoder_hidden_size=1024,
            bos_token_id=ids["[DEC]"],
            sep_token_id=ids["[SEP]"],
            eos_token_id=ids["[SEP]"],
            pad_token_id=0,
        ),
    )
    return BLIP.model_class(cfg), side


def _florence2_model(reduced: bool, tokenizer: object) -> tuple[nn.Module, int]:
    ids = tokenizer.get_vocab()  # type: ignore[attr-defined]
    side = 384 if reduced else 768
    cfg = Florence2Config(  # florence-community/Florence-2-base
        vision_config=dict(depths=[1, 1, 3, 1] if reduced else [1, 1, 9, 1], projection_dim=768),
        text_config=dict(
            vocab_size=51289,
            d_model=768,
            encoder_layers=2 if reduced else 6,
            decoder_layers=2 if reduced else 6,
            encoder_attention_heads=12,
            decoder_attention_heads=12,
            encoder_ffn_dim=3072,
            decoder_ffn_dim=3072,
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=2,
        ),
        image_token_id=ids["<image>"],
    )
    return FLORENCE2.model_class(cfg), side


def hf_runner(family: Family, reduced: bool, dtype: torch.dtype, device: str) -> Runner:
    """The family's own captioner class around a random model of the real shape; the tiny tokenizer only
    supplies the prompt ids (the model keeps its real vocabulary, so the output layer costs what it does)."""
    if family is BLIP:
        tokenizer: object = tiny_bert_tokenizer()
        model, side = _blip_model(reduced, tokenizer)
        processor: object = BlipImageProcessorPil(size={"height": side, "width": side})
        label = "BLIP-large"
    else:
        tokenizer = tiny_bart_tokenizer()
        model, side = _florence2_model(reduced, tokenizer)
        hw = {"height": side, "width": side}
        processor = CLIPImageProcessorPil(
            size=hw, crop_size=hw, do_center_crop=False, resample=3, image_seq_length=(side // 32) ** 2 + 1
        )
        label = "Florence-2-base"
    model = model.to(device, dtype).eval()
    gen = replace(family.generation, max_new_tokens=NEW_TOKENS, min_new_tokens=0)
    cap = HFCaptioner(family, model, processor, tokenizer, label, batch_size=max(BATCHES), generation=gen)
    n = sum(p.numel() for p in model.parameters())
    return Runner(label + (" reduced" if reduced else ""), n, side, gen.beam, cap.generate)


def runners(reduced: bool, dtype: torch.dtype, device: str) -> Iterator[Runner]:
    """Built one at a time, so only one model is in memory."""
    yield ofa_runner(reduced, dtype, device)
    for family in (BLIP, FLORENCE2):
        yield hf_runner(family, reduced, dtype, device)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(n)]


def images_per_s(r: Runner, batch: int, sync: Callable[[], None] = lambda: None, repeats: int = 1) -> float:
    batch_frames = frames(batch)
    with torch.no_grad():
        return batch / timed(lambda: r.run(batch_frames), sync, repeats)


def bench_cpu_families(quick: bool) -> list[str]:
    torch.set_flush_denormal(True)
    full_rows, reduced_rows = [], []
    for r in runners(False, torch.float32, "cpu"):
        ips = images_per_s(r, 1)
        full_rows.append(
            f"| {r.name} | {r.params / 1e6:.0f}M | {r.side} | {r.beam} | {1 / ips:.2f} | {ips:.3f} |"
        )
        print(full_rows[-1], flush=True)
        del r
    batches = BATCHES[:2] if quick else BATCHES
    for r in runners(True, torch.float32, "cpu"):
        with torch.no_grad():
            r.run(frames(1, seed=1))  # warm-up: first touch of the weights, kernel set-up
        rates = [images_per_s(r, b) for b in batches]
        cells = " | ".join(f"{ips:.3f} ({ips / rates[0]:.2f}x)" for ips in rates)
        reduced_rows.append(f"| {r.name} | {r.params / 1e6:.0f}M | {r.side} | {r.beam} | {cells} |")
        print(reduced_rows[-1], flush=True)
        del r
    fl = flops_per_image(large_config())
    return [
        f"### CPU ({cpu_name()}, {torch.get_num_threads()} threads, fp32)",
        "",
        "Full shapes, batch 1 (one 720p frame -> preprocessing -> encoder -> beam search over "
        f"{NEW_TOKENS} tokens):",
        "",
        "| family (shape) | parameters | input side | beam | s/image | images/s |",
        "|---|---|---|---|---|---|",
        *full_rows,
        "",
        "Reduced shapes (input side / 2; depth cut: OFA 3+3 of 12+12 layers with the whole ResNet, BLIP 6 of "
        "24 vision and 3 of 12 text layers, Florence-2 3 of 9 stage-3 DaViT blocks and 2+2 of 6+6 BART "
        "layers; widths and vocabularies kept), images/s at each batch (x batch 1 of the same shape, same run):",
        "",
        "| family (reduced shape) | parameters | input side | beam | "
        + " | ".join(f"batch {b}" for b in batches)
        + " |",
        "|---|---|---|---|" + "---|" * len(batches),
        *reduced_rows,
        "",
        f"OFA-large FLOPs per image (analytic): encoder {fl['encoder'] / 1e9:.0f} G (ResNet {fl['resnet'] / 1e9:.0f} G), "
        f"cross-attention K/V {fl['cross_kv'] / 1e9:.0f} G, beam search {fl['decoder'] / 1e9:.0f} G; "
        f"total {fl['total'] / 1e12:.2f} TFLOP.",
        "",
    ]


def bench_ofa_kv_cache(quick: bool) -> list[str]:
    """OFA-large beam search with the incremental KV cache against recomputing the prefix every step."""
    cfg = large_config()
    model = large_random_model(torch.float32, "cpu")
    batches = [1, 8] if quick else [1, 8, 32]
    warm = fake_encoder_out(cfg, 1, torch.float32, "cpu")
    for use_cache in (True, False):  # first-touch of the decoder weights and kernel set-up, not timed
        beam_search_encoded(model, warm, GenerationConfig(max_len=2, use_cache=use_cache))
    rows = []
    for b in batches:
        enc = fake_encoder_out(cfg, b, torch.float32, "cpu")
        results = {}
        for use_cache in (True, False):
            if not use_cache and b > (1 if quick else 8):
                continue  # the recompute baseline is too slow on CPU at large batches; measured where it fits
            gen = GenerationConfig(use_cache=use_cache)

            def run(gen: GenerationConfig = gen, enc: EncoderOut = enc) -> None:
                beam_search_encoded(model, enc, gen)

            results[use_cache] = timed(run) / b
        base = results.get(False)
        rows.append(
            f"| {b} | {results[True]:.2f} | "
            + (f"{base:.2f} | {base / results[True]:.2f}x |" if base is not None else "not run | - |")
        )
        print(rows[-1], flush=True)
    return [
        "### OFA-large beam search: KV cache vs recompute (CPU, fp32)",
        "",
        "Beam 5, 16 tokens + EOS, trigram blocking, from an encoder output of the real shape (908 tokens).",
        "",
        "| batch | KV cache s/image | recompute s/image | speed-up |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def bench_gpu(batches: list[int], peak_tflops: float, quick: bool) -> list[str]:
    torch.backends.cudnn.benchmark = True
    fl = flops_per_image(large_config())
    bound = peak_tflops * 1e12 / fl["total"]
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        for r in runners(False, dtype, "cuda"):
            for b in batches:
                try:
                    images_per_s(r, b, torch.cuda.synchronize)  # warm-up (cudnn autotune, allocator)
                    ips = images_per_s(r, b, torch.cuda.synchronize, 1 if quick else 3)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append(f"| {r.name} | {dtype_name(dtype)} | {b} | out of memory | |")
                    continue
                of_bound = f"{ips / bound:.1%}" if r.name == "OFA-large" else "-"
                rows.append(f"| {r.name} | {dtype_name(dtype)} | {b} | {ips:.1f} | {of_bound} |")
                print(rows[-1], flush=True)
            del r
            torch.cuda.empty_cache()
    return [
        f"### GPU ({torch.cuda.get_device_name()}, CUDA {torch.version.cuda})",
        "",
        f"Full shapes end to end from 720p uint8 frames ({NEW_TOKENS} tokens, each family's beam). OFA's "
        f"physical estimate: {fl['total'] / 1e12:.2f} TFLOP per image at a {peak_tflops:.0f} TFLOP/s peak "
        f"= {bound:.0f} images/s upper bound.",
        "",
        "| family | dtype | batch | images/s | of OFA's physical bound |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="reduced shapes at batches 1 and 16 only (full shapes still at batch 1); one GPU repeat",
    )
    ap.add_argument("--gpu-batches", default=",".join(map(str, BATCHES)))
    ap.add_argument(
        "--peak-tflops", type=float, default=H100_DENSE_FP16_TFLOPS, help="dense fp16 peak of the GPU"
    )
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU section (e.g. on a GPU machine)")
    ap.add_argument("--kv-cache", action="store_true", help="also OFA's KV cache vs recompute (slow on CPU)")
    ap.add_argument(
        "--threads", type=int, help="CPU threads (default: torch's default); on a loaded machine 1 wins"
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    load = load_average()
    flags = "".join(f" {f}" for f, on in (("--quick", args.quick), ("--kv-cache", args.kv_cache)) if on) + (
        f" --threads {args.threads}" if args.threads else ""
    )
    lines = [
        "## Captioner families (random weights, end to end)",
        "",
        f"{dt.date.today().isoformat()}; {cpu_name()}, {os.cpu_count()} cores (1-min load average {load:.1f} "
        f"at the start: other processes shared the CPU); torch {torch.__version__}. "
        f"Run: `python bench/bench_captioner.py{flags}`.",
        "",
    ]
    if not args.no_cpu:
        lines += bench_cpu_families(args.quick)
        if args.kv_cache:
            lines += bench_ofa_kv_cache(args.quick)
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
