"""Text-video retrieval evaluation (MSR-VTT, DiDeMo, LSMDC, ActivityNet, MSVD); its command line is
``python -m trainer.evaluate``.

``evaluate_model(model, tokenizer, eval_cfg, device)`` encodes every video of the split once (uniform
frames, CLIP preprocessing), every query text once, and reports text->video and video->text R@1/5/10,
MdR and MnR, plain and with DSL (CLIPVIP.md §6). Missing or undecodable videos are excluded and counted;
the result says how many queries were evaluated. It is also the training loop's validation hook: select
models on the ``val`` split, never on ``test`` (the official CLIP-ViP code selects on test;
docs/EVALUATION.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import EvalConfig, eval_config
from trainer.data.frames import VideoDecodeError, load_clip
from trainer.data.retrieval import RetrievalSet, load_split, resolve_videos
from trainer.eval.metrics import METRIC_KEYS, dsl, multi_caption_metrics, retrieval_metrics

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- decoding


class _ClipDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], spans: list, num_frames: int, image_size: int) -> None:
        self.paths, self.spans, self.num_frames, self.image_size = paths, spans, num_frames, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, load_clip(self.paths[i], self.num_frames, self.image_size, span=self.spans[i]), None
        except VideoDecodeError as e:
            return i, None, str(e)


def _collate(items: list) -> list:
    return items


@dataclass
class EncodedSplit:
    rset: RetrievalSet
    video_features: torch.Tensor  # [V, D] for the kept videos
    kept: list[int]  # indices into rset.videos
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _embed_videos(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    # CLIPViP.retrieval_video: plain features, or CLIP2Video's fused [sqrt(l) g, sqrt(1-l) z] with TAB on, whose
    # text x video products are exactly l s_g + (1-l) s_TAB; the similarity below stays one [Q, V] matmul.
    fn = getattr(model, "retrieval_video", None)
    return fn(pixels) if fn is not None else model.encode_video(pixels)


def _embed_texts(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    fn = getattr(model, "retrieval_text", None)
    return fn(ids, mask) if fn is not None else model.encode_text(ids, mask)


@torch.no_grad()
def encode_videos(model: Any, cfg: EvalConfig, rset: RetrievalSet, device: torch.device) -> EncodedSplit:
    """Decode and encode every resolvable video once; failures are recorded, not raised."""
    res = resolve_videos(rset, Path(cfg.videos))
    keep_idx = {id(v): i for i, v in enumerate(rset.videos)}
    orig = [keep_idx[id(v)] for v in res.videos]
    ds = _ClipDataset(res.paths, [v.span for v in res.videos], cfg.num_frames, cfg.image_size)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=_collate
    )
    feats: list[torch.Tensor] = []
    kept: list[int] = []
    failed: dict[str, str] = {}
    t0, done = time.monotonic(), 0
    for items in loader:
        good = [(i, x) for i, x, _ in items if x is not None]
        for i, x, err in items:
            if x is None:
                failed[res.videos[i].key] = err or "decode failed"
                log.warning("eval: excluding %s (%s)", res.paths[i], err)
        if good:
            pixels = torch.stack([x for _, x in good]).to(device)
            feats.append(_embed_videos(model, pixels).float().cpu())
            kept.extend(orig[i] for i, _ in good)
        done += len(items)
        rate = done / max(time.monotonic() - t0, 1e-9)
        log.info("eval %s/%s: %d/%d videos (%.1f/s, ETA %.0fs)", rset.dataset, rset.split, done, len(ds), rate,
                 (len(ds) - done) / max(rate, 1e-9))  # fmt: skip
    width = feats[0].shape[1] if feats else 0
    video_features = torch.cat(feats) if feats else torch.empty(0, width)
    return EncodedSplit(rset, video_features, kept, res.missing, failed)


@torch.no_grad()
def encode_texts(model: Any, tokenizer: Any, texts: list[str], cfg: EvalConfig, device: torch.device):
    out = []
    for s in range(0, len(texts), cfg.text_batch_size):
        ids, mask = tokenizer(texts[s : s + cfg.text_batch_size], cfg.max_text_len)
        out.append(_embed_texts(model, ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


# ---------------------------------------------------------------------------------------------- scoring


def score(
    sim: torch.Tensor, owner: list[int], temperature: float = 100.0
) -> dict[str, dict[str, dict[str, float]]]:
    """Plain and DSL metrics of a texts x videos similarity; one caption per video in video order uses the
    square protocol, anything else the multi-caption protocol (identical results when they coincide)."""
    out = {}
    for name, s in (("plain", sim), ("dsl", dsl(sim, temperature))):
        if owner == list(range(sim.shape[1])):
            out[name] = {"t2v": retrieval_metrics(s), "v2t": retrieval_metrics(s.T)}
        else:
            out[name] = multi_caption_metrics(s, owner)
    return out


def evaluate_model(
    model: nn.Module, tokenizer: Any, eval_cfg: Any, device: torch.device | str
) -> dict[str, Any]:
    """Evaluate ``model`` on ``eval_cfg``'s split; returns counts, nested metrics and flat scalars.

    Keys: ``dataset, split, mode, videos_total, videos_missing, videos_failed, videos_evaluated,
    queries_total, queries_evaluated, metrics`` ({plain,dsl} -> {t2v,v2t} -> R1..MnR), flat ``t2v_R1``,
    ``dsl_t2v_R1`` ... and ``excluded`` (key -> reason, all missing/failed videos).
    """
    cfg = eval_config(eval_cfg)
    device = torch.device(device)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    vision = getattr(getattr(model, "config", None), "vision", None)
    if vision is not None and getattr(vision, "image_size", cfg.image_size) != cfg.image_size:
        # Frames are squashed to the model's input size whatever the config says.
        cfg = replace(cfg, image_size=int(vision.image_size))
    rset = load_split(cfg, cfg.split)
    total_queries = len(rset.queries()[0])
    if cfg.max_videos > 0:
        rset = RetrievalSet(rset.dataset, rset.split, rset.videos[: cfg.max_videos], rset.mode, rset.skipped)
    was_training = model.training
    model.eval()
    try:
        enc = encode_videos(model, cfg, rset, device)
        kept_set = {k: j for j, k in enumerate(enc.kept)}
        texts, owner_all = rset.queries()
        sel = [q for q, o in enumerate(owner_all) if o in kept_set]
        owner = [kept_set[owner_all[q]] for q in sel]
        text_features = encode_texts(model, tokenizer, [texts[q] for q in sel], cfg, device)
    finally:
        model.train(was_training)
    result: dict[str, Any] = {
        "dataset": rset.dataset,
        "split": rset.split,
        "mode": rset.mode,
        "num_frames": cfg.num_frames,
        "videos_total": len(rset.videos),
        "videos_missing": len(enc.missing),
        "videos_failed": len(enc.failed),
        "videos_evaluated": len(enc.kept),
        "queries_total": total_queries,
        "queries_evaluated": len(sel),
        "annotation_rows_skipped": len(rset.skipped),
        "excluded": {**{k: "missing" for k in enc.missing}, **enc.failed},
    }
    if not sel:
        log.error("eval %s/%s: no video could be evaluated", rset.dataset, rset.split)
        result["metrics"] = None
        return result
    sim = text_features @ enc.video_features.T
    metrics = score(sim, owner, cfg.dsl_temperature)
    result["metrics"] = metrics
    for variant, prefix in (("plain", ""), ("dsl", "dsl_")):
        for direction in ("t2v", "v2t"):
            for k in METRIC_KEYS:
                result[f"{prefix}{direction}_{k}"] = metrics[variant][direction][k]
    return result


def format_table(result: dict[str, Any]) -> str:
    """The paper's layout: one row per direction x post-processing, R@1 R@5 R@10 MdR MnR."""
    head = (f"{result['dataset']} {result['split']} ({result['mode']}): {result['queries_evaluated']}/"
            f"{result['queries_total']} queries, {result['videos_evaluated']}/{result['videos_total']} videos "
            f"({result['videos_missing']} missing, {result['videos_failed']} undecodable)")  # fmt: skip
    if not result.get("metrics"):
        return head + "\n(no metrics: nothing evaluated)"
    lines = [head, f"{'':<20}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MdR':>7}{'MnR':>8}"]
    for variant in ("plain", "dsl"):
        for direction, label in (("t2v", "text->video"), ("v2t", "video->text")):
            m = result["metrics"][variant][direction]
            name = label + (" +DSL" if variant == "dsl" else "")
            lines.append(
                f"{name:<20}{m['R1']:>7.1f}{m['R5']:>7.1f}{m['R10']:>7.1f}{m['MdR']:>7.1f}{m['MnR']:>8.1f}"
            )
    return "\n".join(lines)
