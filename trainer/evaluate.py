"""Text-video retrieval evaluation (MSR-VTT, DiDeMo, LSMDC, ActivityNet, MSVD).

``python -m trainer.evaluate --config CFG.yaml [--checkpoint PATH] [--split test] [--out results.json]``
encodes every video of the split once (uniform frames, CLIP preprocessing), every query text once, and
reports text->video and video->text R@1/5/10, MdR and MnR, plain and with DSL (CLIPVIP.md §6). With no
``--checkpoint`` the config's initial weights are evaluated (zero-shot). Missing or undecodable videos are
excluded and counted; the result says how many queries were evaluated.

``evaluate_model(model, tokenizer, eval_cfg, device)`` is the training loop's validation hook: select models
on the ``val`` split, never on ``test`` (the official CLIP-ViP code selects on test; docs/EVALUATION.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.metrics import METRIC_KEYS, dsl, multi_caption_metrics, retrieval_metrics
from trainer.retrieval_data import (
    RetrievalDataConfig,
    RetrievalSet,
    VideoDecodeError,
    load_clip,
    load_split,
    resolve_videos,
    retrieval_config,
)

log = logging.getLogger(__name__)


@dataclass
class EvalConfig(RetrievalDataConfig):
    """Retrieval data (see ``RetrievalDataConfig``) plus how to run the evaluation."""

    split: str = "val"  # "val" for model selection during training; "test" only for the final report
    batch_size: int = 16  # videos per forward pass
    text_batch_size: int = 256
    num_workers: int = 2  # decoding processes
    max_videos: int = 0  # >0: evaluate only the first N videos (quick validation); 0 = all
    dsl_temperature: float = 100.0


def eval_config(obj: Any) -> EvalConfig:
    """An ``EvalConfig`` from itself, a mapping, or any object with the same attribute names."""
    if isinstance(obj, EvalConfig):
        return obj
    base = retrieval_config(obj)
    src = obj if isinstance(obj, dict) else {k: getattr(obj, k) for k in EvalConfig.__dataclass_fields__
                                             if hasattr(obj, k)}  # fmt: skip
    extra = {k: src[k] for k in EvalConfig.__dataclass_fields__ if k in src and k not in base.__dict__}
    return EvalConfig(**base.__dict__, **extra)


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


# ------------------------------------------------------------------------------------------------- CLI


def load_model_for_eval(cfg: Any, checkpoint: str | None, tokenizer: Any, device: torch.device) -> nn.Module:
    """``checkpoint`` (a run's ``model/``/``best/`` dir, HF CLIP dir, OpenAI CLIP .pt or CLIP-ViP checkpoint)
    or, when None, the config's initial model exactly as training builds it (``model.init`` weights, or the
    seeded tiny random model), i.e. the zero-shot baseline."""
    from trainer.train import build_model

    torch.manual_seed(cfg.seed)  # the training run seeds the same way before building its model
    return build_model(cfg, tokenizer, init=checkpoint).to(device)


def _find_tokenizer(explicit: str | None, cfg: Any, checkpoint: str | None) -> Path | None:
    candidates = [
        explicit,
        cfg.tokenizer.path,
        checkpoint,
        cfg.model.init,
        str(Path(cfg.out_dir) / "tokenizer"),
    ]
    for c in candidates:
        if c and (Path(c) / "vocab.json").is_file():
            return Path(c)
        if c and Path(c).is_file() and (Path(c).parent / "vocab.json").is_file():
            return Path(c).parent
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m trainer.evaluate", allow_abbrev=False, description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--config", required=True, type=Path, help="fine-tuning YAML (its eval, model, tokenizer)")
    p.add_argument(
        "--checkpoint", default=None, help="model dir / CLIP weights; default: the config's model.init"
    )
    p.add_argument("--split", default=None, help="val or test (default: the config's eval.split)")
    p.add_argument("--videos", default=None, help="videos root (overrides eval.videos)")
    p.add_argument(
        "--tokenizer", default=None, help="dir with vocab.json + merges.txt (default: from the config)"
    )
    p.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    # anything else is a trainer.train-style `--key value` config override (e.g. --model.video_head clip2video)
    args, overrides = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainer.config import load_config  # here: trainer.config imports this module
    from trainer.tokenizer import load_clip_tokenizer

    cfg = load_config(args.config, overrides)
    ecfg = cfg.eval
    for name, value in (("split", args.split), ("videos", args.videos), ("batch_size", args.batch_size),
                        ("num_workers", args.num_workers)):  # fmt: skip
        if value is not None:
            setattr(ecfg, name, value)
    tok_dir = _find_tokenizer(args.tokenizer, cfg, args.checkpoint)
    if tok_dir is None:
        p.error("no tokenizer found: pass --tokenizer DIR (vocab.json + merges.txt) or set tokenizer.path")
    tokenizer = load_clip_tokenizer(tok_dir)
    device = torch.device(args.device)
    model = load_model_for_eval(cfg, args.checkpoint, tokenizer, device)
    result = evaluate_model(model, tokenizer, ecfg, device)
    result["checkpoint"] = args.checkpoint or cfg.model.init or "(random init)"
    print(format_table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result.get("metrics") else 1


if __name__ == "__main__":
    sys.exit(main())
