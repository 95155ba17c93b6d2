"""Benchmark: ViP-guided attention (efficient, no dense mask) vs dense masked attention.

Measures forward+backward time at CLIP-ViP's shapes (12 frames, 3 proxies, 224^2):
B/32 (L=49, N=592) and B/16 (L=196, N=2356), width 768, 12 heads.
- kernel: the attention op alone on [B, 12, N, 64] q/k/v;
- layer: one pre-LN CLIP encoder layer (a 12-layer tower costs ~12x; on CPU we time one layer);
- tower (CUDA only): the full 12-layer vision tower.
Baselines in the same run: SDPA with a dense boolean mask (what a masked implementation would do) and an
explicit softmax with the mask (the naive reference). On CUDA it also measures training samples/s of the
whole B/32 model at 12 frames (bf16 autocast, AdamW).

Usage: python bench/bench_attention.py [--quick] [--out docs/bench/attention.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from pipeline.machine import machine_line
from trainer.model import CLIPViP, ClipViPConfig, VisionConfig
from trainer.model.attention import reference_attention, vip_attention, vip_mask
from trainer.model.encoder import CLIPEncoderLayer

FRAMES, PROXIES, WIDTH, HEADS = 12, 3, 768, 12
SHAPES = {"B/32": 49, "B/16": 196}


def machine() -> str:
    gpu = [f"GPU: {torch.cuda.get_device_name(0)}"] if torch.cuda.is_available() else []
    return machine_line(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)", *gpu, platform.platform()
    )


def timed(fn: Callable[[], None], device: torch.device, repeats: int, reduce: Callable = min) -> float:
    """Minimum seconds of fn() over `repeats` calls after one warm-up (the least disturbed run on a shared host)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(reduce(times))


def peak_mb(fn: Callable[[], None], device: torch.device) -> str:
    if device.type != "cuda":
        return "-"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"


def methods(frame_len: int, device: torch.device) -> dict[str, Callable]:
    m = 1 + PROXIES
    mask = vip_mask(m, FRAMES, frame_len, device)
    return {
        "ViP (ours, no mask)": partial(vip_attention, num_global=m, num_frames=FRAMES),
        "dense mask + SDPA": partial(torch.nn.functional.scaled_dot_product_attention, attn_mask=mask),
        "dense mask + explicit softmax": partial(reference_attention, mask=mask),
    }


def bench_kernel(
    name: str, frame_len: int, batch: int, device: torch.device, dtype: torch.dtype, repeats: int
):
    n = 1 + PROXIES + FRAMES * frame_len
    rows = []
    for label, attend in methods(frame_len, device).items():
        # Leaf tensors in the projection layout [B, N, H, d], viewed as [B, H, N, d] as the model does.
        q, k, v = (
            torch.randn(batch, n, HEADS, WIDTH // HEADS, device=device, dtype=dtype, requires_grad=True)
            for _ in range(3)
        )

        def step(attend=attend, q=q, k=k, v=v) -> None:
            attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).sum().backward()

        rows.append(
            (f"{name} kernel, batch {batch}", label, timed(step, device, repeats), peak_mb(step, device))
        )
    return rows


def bench_layer(
    name: str, frame_len: int, batch: int, device: torch.device, dtype: torch.dtype, repeats: int
):
    n = 1 + PROXIES + FRAMES * frame_len
    torch.manual_seed(0)
    layer = CLIPEncoderLayer(WIDTH, HEADS, 4 * WIDTH, "quick_gelu", 1e-5).to(device, dtype)
    x = torch.randn(batch, n, WIDTH, device=device, dtype=dtype, requires_grad=True)
    rows = []
    for label, attend in methods(frame_len, device).items():

        def step(attend=attend) -> None:
            layer(x, attend).sum().backward()

        rows.append(
            (f"{name} 1 layer, batch {batch}", label, timed(step, device, repeats), peak_mb(step, device))
        )
    return rows


def bench_tower(name: str, patch: int, batch: int, device: torch.device, repeats: int):
    cfg = ClipViPConfig(vision=VisionConfig(patch=patch), num_proxies=PROXIES)
    model = CLIPViP(cfg).to(device).train()
    tower = model.vision_model
    frame_len = cfg.vision.num_patches
    x = torch.randn(batch, FRAMES, 3, 224, 224, device=device)
    rows = []
    for label, attend in methods(frame_len, device).items():

        def step(attend=attend) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                tower.forward_tokens(x, attend)[:, 0].float().sum().backward()

        rows.append(
            (
                f"{name} 12-layer tower, bf16, batch {batch}",
                label,
                timed(step, device, repeats),
                peak_mb(step, device),
            )
        )
    return rows


def bench_training(device: torch.device, batch: int, steps: int) -> str:
    """Samples/s of a full CLIP-ViP B/32 training step (video + text, symmetric InfoNCE), bf16 autocast."""
    torch.manual_seed(0)
    model = CLIPViP(ClipViPConfig()).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    x = torch.randn(batch, FRAMES, 3, 224, 224, device=device)
    ids = torch.randint(0, 49405, (batch, 70), device=device)
    ids[:, -1] = 49407
    mask = torch.ones_like(ids)
    labels = torch.arange(batch, device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            v = model.encode_video(x)
            t = model.encode_text(ids, mask)
            logits = model.logit_scale.exp() * v.float() @ t.float().t()
            loss = torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(
                logits.t(), labels
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sec = timed(step, device, steps, reduce=statistics.median)  # sustained rate, not the best step
    return (
        f"Training throughput, CLIP-ViP B/32, 12 frames, text length 70, batch {batch}, bf16 autocast, AdamW, "
        f"one {torch.cuda.get_device_name(0)}: **{batch / sec:.1f} samples/s** ({sec * 1000:.0f} ms/step, "
        f"median of {steps}; peak memory {peak_mb(step, device)} MiB)."
    )


def table(rows: list[tuple[str, str, float, str]]) -> list[str]:
    lines = [
        "| shape | method | fwd+bwd ms | vs dense SDPA | peak MiB |",
        "|---|---|---:|---:|---:|",
    ]
    base = {r[0]: r[2] for r in rows if r[1] == "dense mask + SDPA"}
    for shape, label, sec, mem in rows:
        lines.append(f"| {shape} | {label} | {sec * 1000:.1f} | {base[shape] / sec:.2f}x | {mem} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, B/32 only on CPU")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/bench/attention.md"
    )
    args = ap.parse_args()
    repeats = 2 if args.quick else 5
    out = [
        "## ViP-guided attention vs dense masked attention",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}. "
        f"12 frames, {PROXIES} proxies (M={1 + PROXIES}), width {WIDTH}, {HEADS} heads; forward+backward, best "
        f"of {repeats} after a warm-up (the host may be shared). Ratio > 1 means faster than SDPA with a dense boolean mask. "
        "Peak memory is measured on CUDA only.",
        "",
    ]
    out += [
        "| shape | tokens N | dense scores per head (N^2) | ViP scores per head | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, frame_len in SHAPES.items():
        m, n = 1 + PROXIES, 1 + PROXIES + FRAMES * frame_len
        vip = m * n + FRAMES * frame_len * (m + frame_len)
        out.append(f"| {name} | {n} | {n * n:,} | {vip:,} | {n * n / vip:.1f}x |")
    out.append("")
    cpu = torch.device("cpu")
    rows = []
    shapes = {"B/32": SHAPES["B/32"]} if args.quick else SHAPES
    for name, frame_len in shapes.items():
        t0 = time.perf_counter()
        batch = 2 if name == "B/32" else 1
        rows += bench_kernel(name, frame_len, batch, cpu, torch.float32, repeats)
        rows += bench_layer(name, frame_len, batch, cpu, torch.float32, repeats)
        print(f"CPU {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
    out += ["### CPU (float32; one layer timed, a 12-layer tower costs ~12x)", "", *table(rows), ""]
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        rows = []
        for name, frame_len in SHAPES.items():
            batch = 32 if name == "B/32" else 8
            rows += bench_kernel(name, frame_len, batch, gpu, torch.bfloat16, repeats * 4)
            rows += bench_tower(name, int(name[2:]), batch // 4, gpu, repeats * 4)
            print(f"CUDA {name} done", flush=True)
        out += [
            "### CUDA (bfloat16)",
            "",
            *table(rows),
            "",
            bench_training(gpu, 32, 10 if args.quick else 20),
            "",
        ]
    else:
        out += [
            "CUDA: not available on this machine, GPU rows and the training throughput were not measured.",
            "",
        ]
    text = "\n".join(out)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
