"""CLIP-ViP training loop (post-pretraining on pipeline shards, or fine-tuning on a retrieval set).

``python -m trainer.train CONFIG.yaml [--key value ...]`` runs one process (CPU or one GPU);
``trainer/run.sh CONFIG.yaml [...]`` launches torchrun (one process per GPU, or one CPU process).

Outputs under ``out_dir``: config.yaml (the resolved config), train.log, log.jsonl and tensorboard/ (loss
terms, temperature, lr, grad norm, samples/s, data-wait), checkpoints/last.pt (resumable state),
model/ (final weights, ``trainer.model.from_pretrained`` format), best/ (best on the validation split, when
validation is on), loss_curves.png, summary.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline.annotations import AnnotationError
from pipeline.cli import UserError, run_cli
from pipeline.shard_format import CAPTION, SUBTITLE, iter_samples
from trainer.checks import check_train_inputs, load_config_checked
from trainer.config import (
    TrainConfig,
    config_keys,
    needs_caption,
    needs_frame,
    save_config,
    to_dict,
)
from trainer.data.batch import Batch
from trainer.data.retrieval import RetrievalDataError, build_train_loader, load_split
from trainer.data.shards import build_shard_loader, count_samples, find_shard_tars
from trainer.eval.retrieval import evaluate_model
from trainer.loop import distributed as tdist
from trainer.loop.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from trainer.loop.logs import MetricLogger, Progress, plot_losses
from trainer.loop.losses import clamp_logit_scale, contrastive_loss
from trainer.loop.optim import build_optimizer
from trainer.loop.precision import Precision, resolve_precision
from trainer.loop.scheduler import LRSchedule, total_steps
from trainer.model import CLIPViP, save_pretrained
from trainer.model.build import build_model
from trainer.model.clip2video import clip2video_loss_terms
from trainer.model.tokenizer import build_tiny_tokenizer, load_clip_tokenizer

log = logging.getLogger("trainer.train")


# ------------------------------------------------------------------------------------------------- setup


def _setup_logging(out: Path, is_main: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for old in [h for h in root.handlers if getattr(h, "_clipvip", False)]:  # a previous run in-process
        root.removeHandler(old)
        old.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if is_main:
        handlers.append(logging.FileHandler(out / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h._clipvip = True  # type: ignore[attr-defined]
        root.addHandler(h)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _shard_texts(tars: list[Path], limit: int = 50000) -> list[str]:
    texts: list[str] = []
    for t in tars:
        for _key, raw in iter_samples(t, (SUBTITLE, CAPTION)):
            texts += [raw[ext].decode("utf-8", errors="replace") for ext in (SUBTITLE, CAPTION) if ext in raw]
            if len(texts) >= limit:
                return texts
    return texts


def _retrieval_texts(cfg: TrainConfig) -> list[str]:
    rset = load_split(cfg.data.retrieval, "train")
    return [t for v in rset.videos for t in v.texts]


def build_tokenizer(cfg: TrainConfig, info: tdist.DistInfo, tars: list[Path] | None) -> tuple[Any, Path]:
    """(tokenizer, its dir): ``tokenizer.path``, else the ``model.init`` dir, else (tiny model) learned from the
    training texts into OUT/tokenizer by rank 0."""
    cands = [cfg.tokenizer.path] if cfg.tokenizer.path else []
    if cfg.model.init and Path(cfg.model.init).is_dir():
        cands.append(cfg.model.init)
    for c in cands:
        if (Path(c) / "vocab.json").is_file():
            return load_clip_tokenizer(c), Path(c)
    if cfg.tokenizer.path:
        raise FileNotFoundError(f"tokenizer.path {cfg.tokenizer.path}: no vocab.json + merges.txt")
    if not cfg.model.tiny:
        raise ValueError("set tokenizer.path (a CLIP tokenizer dir with vocab.json + merges.txt)")
    tok_dir = Path(cfg.out_dir) / "tokenizer"
    if info.is_main and not (tok_dir / "vocab.json").is_file():
        texts = _shard_texts(tars) if tars else _retrieval_texts(cfg)
        build_tiny_tokenizer(texts, tok_dir, num_merges=cfg.tokenizer.tiny_merges)
        log.info(
            "learned a tiny BPE (%d merges) from %d texts -> %s",
            cfg.tokenizer.tiny_merges,
            len(texts),
            tok_dir,
        )
    tdist.barrier()
    return load_clip_tokenizer(tok_dir), tok_dir


class FeatureStep(nn.Module):
    """The forward DDP wraps: video, subtitle, caption and middle-frame features of a batch, and with
    CLIP2Video's TAB the (video, text) TAB features.

    Subtitles and captions go through the text tower in one pass (no batch-dependent op in it)."""

    def __init__(self, model: CLIPViP) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        video: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        cap_ids: torch.Tensor | None = None,
        cap_mask: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
    ) -> tuple[
        torch.Tensor,
        torch.Tensor,
        torch.Tensor | None,
        torch.Tensor | None,
        tuple[torch.Tensor, torch.Tensor] | None,
    ]:
        if self.model.uses_tab:  # the loss is "vs" (checked when the Trainer is built)
            v, zv = self.model.clip2video_video(video)
            s, zs = self.model.clip2video_text(text_ids, text_mask)
            return v, s, None, None, (zv, zs)
        v = self.model.encode_video(video)
        c = f = None
        if cap_ids is not None and cap_mask is not None:
            both = self.model.encode_text(torch.cat([text_ids, cap_ids]), torch.cat([text_mask, cap_mask]))
            s, c = both[: text_ids.shape[0]], both[text_ids.shape[0] :]
        else:
            s = self.model.encode_text(text_ids, text_mask)
        if image is not None:
            f = self.model.encode_video(image)
        return v, s, c, f, None


# ---------------------------------------------------------------------------------------- retrieval data


class RetrievalStream:
    """Epoch loop over ``trainer.data.retrieval``'s loader with a resumable (epoch, batch) position.

    Resume replays the sampler order of the epoch and skips the consumed batches (they are decoded again)."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.epoch, self.batch_in_epoch = loader, 0, 0

    def __iter__(self) -> Iterator[Batch]:
        while True:
            self.loader.set_epoch(self.epoch)
            skip = self.batch_in_epoch
            produced = 0
            for i, b in enumerate(self.loader):
                produced += 1
                if i < skip:
                    continue
                self.batch_in_epoch = i + 1
                yield b
            if produced == 0:
                raise RuntimeError(f"epoch {self.epoch} of the retrieval training set produced no batch")
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "retrieval", "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "totals": {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "retrieval":
            raise ValueError("data position was saved by a shard run")
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])

    @property
    def totals(self) -> dict[str, int]:
        return {}


# ------------------------------------------------------------------------------------------------ the run


def _resume_path(cfg: TrainConfig) -> Path | None:
    if cfg.resume == "none":
        return None
    if cfg.resume == "auto":
        p = Path(cfg.out_dir) / "checkpoints" / "last.pt"
        return p if p.is_file() else None
    p = Path(cfg.resume)
    if not p.is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {p}")
    return p


def _gather_objects(obj: Any) -> list[Any]:
    if tdist.world_size() == 1:
        return [obj]
    out: list[Any] = [None] * tdist.world_size()
    dist.all_gather_object(out, obj)
    return out


def _broadcast_object(obj: Any) -> Any:
    if tdist.world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        self.info = tdist.init_distributed(cfg.device)
        self.out = Path(cfg.out_dir)
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        tdist.barrier()
        _setup_logging(self.out, self.info.is_main)
        _seed_everything(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
        self.tars = find_shard_tars(cfg.data.shards) if cfg.data.kind == "shards" else None
        self.tokenizer, self.tokenizer_dir = build_tokenizer(cfg, self.info, self.tars)
        self.model: CLIPViP = build_model(cfg, self.tokenizer).to(self.info.device)
        if self.model.uses_tab and cfg.loss != "vs":  # e.g. TAB enabled by a checkpoint's own config
            raise ValueError(f"CLIP2Video's TAB trains with loss 'vs' (clip2video_loss), got {cfg.loss!r}")
        image_size = self.model.config.vision.image_size
        cfg.eval.image_size = image_size  # evaluation and retrieval data always follow the model's input size
        cfg.data.retrieval.image_size = image_size
        self.precision: Precision = resolve_precision(cfg.precision, self.info.device)
        self.global_batch = cfg.data.batch_size * self.info.world_size
        if cfg.data.kind == "shards":
            assert self.tars is not None
            self.loader: Any = build_shard_loader(
                cfg,
                self.tokenizer,
                self.info.rank,
                self.info.world_size,
                image_size=image_size,
                pin_memory=self.info.device.type == "cuda",
                tars=self.tars,  # the list the epoch length is counted on
            )
            size = cfg.schedule.dataset_size
            if not size and not cfg.schedule.total_steps:
                size = _broadcast_object(count_samples(self.tars) if self.info.is_main else None)
        else:
            inner = build_train_loader(cfg, self.tokenizer, self.info.rank, self.info.world_size)
            self.loader = RetrievalStream(inner)
            size = cfg.schedule.dataset_size or len(inner.dataset)
        self.total_steps = cfg.schedule.total_steps or total_steps(
            cfg.schedule.epochs, size, self.global_batch
        )
        self.end_step = min(self.total_steps, cfg.max_steps) if cfg.max_steps else self.total_steps
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = LRSchedule.from_ratio(
            cfg.optim.lr, self.total_steps, cfg.schedule.warmup_ratio, cfg.schedule.kind, cfg.schedule.min_lr
        )
        step_module: nn.Module = FeatureStep(self.model)
        if self.info.world_size > 1:
            dev = self.info.device
            step_module = nn.parallel.DistributedDataParallel(
                step_module,
                device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        self.step_module = step_module
        self.need_cap = needs_caption(cfg.loss)
        self.need_img = needs_frame(cfg.loss)
        self.step = 0
        self._checked_grads = False
        self.best: dict[str, Any] = {"score": None, "step": None}
        self.logger = MetricLogger(self.out) if self.info.is_main else None
        if self.info.is_main:
            save_config(cfg, self.out / "config.yaml")
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(
            "%d process(es) on %s (%s), %s params, loss %s, global batch %d, %d steps (%d this run), precision %s",
            self.info.world_size, self.info.device, self.info.backend or "single", f"{n_params:,}", cfg.loss,
            self.global_batch, self.total_steps, self.end_step, self.precision.name,
        )  # fmt: skip

    # ---- checkpoints --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        data_states = _gather_objects(self.loader.state_dict())
        return {
            "format": "clipvip-train-v1",
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
            "schedule": self.schedule.state_dict(),
            "rng": _gather_objects(rng_state()),
            "data": data_states,
            "best": dict(self.best),
            "world_size": self.info.world_size,
            "config": to_dict(self.cfg),
        }

    def save(self) -> None:
        state = self.state()  # collective: every rank takes part
        if self.info.is_main:
            save_checkpoint(self.out / "checkpoints" / "last.pt", state)
            log.info("saved checkpoint at step %d", self.step)
        tdist.barrier()

    def resume(self, path: Path) -> None:
        ck = load_checkpoint(path, map_location="cpu")
        if ck.get("format") != "clipvip-train-v1":
            raise ValueError(f"{path}: not a clipvip training checkpoint")
        if ck["world_size"] != self.info.world_size:
            raise ValueError(
                f"{path} was written by {ck['world_size']} processes, this run has {self.info.world_size}; "
                "the data position and RNG states are per process (start a new run with model.init instead)"
            )
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.precision.scaler is not None and ck.get("scaler"):
            self.precision.scaler.load_state_dict(ck["scaler"])
        saved = LRSchedule(**ck["schedule"])
        if saved != self.schedule:
            log.warning("schedule changed since the checkpoint: %s -> %s", saved, self.schedule)
        self.step = int(ck["step"])
        self.loader.load_state_dict(ck["data"][self.info.rank])
        set_rng_state(ck["rng"][self.info.rank])
        self.best = dict(ck.get("best") or self.best)
        log.info("resumed from %s at step %d", path, self.step)

    def export(self, directory: Path) -> None:
        """Weights in ``from_pretrained`` format plus the tokenizer files, so the dir is a complete ``init``."""
        save_pretrained(self.model, directory)
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(self.tokenizer_dir / name, directory / name)

    # ---- validation ---------------------------------------------------------------------------------
    def validate(self) -> None:
        if self.info.is_main:
            t0 = time.monotonic()
            res = evaluate_model(self.model, self.tokenizer, self.cfg.eval, self.info.device)
            key = self.cfg.select_metric
            if key not in res:
                raise KeyError(f"select_metric {key!r} not in the evaluation result: {sorted(res)}")
            score = res[key]
            scalars = {k: v for k, v in res.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            scalars["eval_s"] = time.monotonic() - t0
            assert self.logger is not None
            self.logger.write(scalars, self.step, prefix="val")
            better = score is not None and (self.best["score"] is None or score > self.best["score"])
            log.info("validation (%s) at step %d: %s = %s%s", res.get("split"), self.step, key, score,
                     " (best so far)" if better else "")  # fmt: skip
            if better:
                self.best = {
                    "score": float(score),
                    "step": self.step,
                    "metric": key,
                    "split": res.get("split"),
                }
                self.export(self.out / "best")
                (self.out / "best" / "selection.json").write_text(json.dumps(self.best, indent=1))
        self.best = _broadcast_object(self.best)
        tdist.barrier()

    # ---- the loop -----------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        clamp_logit_scale(self.model.logit_scale)  # before the forward, as in pretraining
        lr = self.schedule.apply(self.optimizer, self.step)
        with self.precision.autocast():
            v, s, c, f, tab = self.step_module(
                batch.video,
                batch.text_ids,
                batch.text_mask,
                batch.cap_ids if self.need_cap else None,
                batch.cap_mask if self.need_cap else None,
                batch.image if self.need_img else None,
            )
        # Loss in fp32 on the global batch; the gather sends gradients back to this rank's slice only.
        v, s = tdist.gather_features(v.float()), tdist.gather_features(s.float())
        c = tdist.gather_features(c.float()) if c is not None else None
        f = tdist.gather_features(f.float()) if f is not None else None
        c_valid = (
            tdist.all_gather_tensor(batch.cap_valid)
            if self.need_cap and batch.cap_valid is not None
            else None
        )
        if tab is not None:  # CLIP2Video: lambda Lsym(s_g) + (1 - lambda) Lsym(s_TAB)
            zv, zs = tdist.gather_features(tab[0].float()), tdist.gather_features(tab[1].float())
            lam = self.model.tab_head().center_weight
            loss, terms = clip2video_loss_terms(self.model.logit_scale.float(), s, v, zs, zv, lam)
        else:
            loss, terms = contrastive_loss(
                cfg.loss, v, s, c, f, logit_scale=self.model.logit_scale.float(), c_valid=c_valid
            )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        (scaler.scale(loss) if scaler else loss).backward()
        if not self._checked_grads:
            missing = [n for n, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
            if missing:  # the official loop asserts this every step
                raise RuntimeError(f"trainable parameters without gradient: {missing[:10]}")
            self._checked_grads = True
        if scaler:
            scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = cfg.optim.grad_norm if cfg.optim.grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if scaler:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        out = {"loss": loss.item(), "lr": lr, "grad_norm": grad_norm}
        out.update({f"loss/{k}": t.item() for k, t in terms.items()})
        out["logit_scale"] = self.model.logit_scale.item()
        out["temperature_scale"] = math.exp(out["logit_scale"])
        return out

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        path = _resume_path(cfg)
        if path is not None:
            self.resume(path)
        start = self.step
        progress = Progress(self.end_step, start)
        it = iter(self.loader)
        window: dict[str, float] = {}
        n_window, wait_window, samples_window, t_window = 0, 0.0, 0, time.monotonic()
        self.model.train()
        last: dict[str, float] = {}
        while self.step < self.end_step:
            t0 = time.monotonic()
            batch = next(it)
            wait = time.monotonic() - t0
            batch = batch.to(self.info.device, non_blocking=True)
            last = self.train_step(batch)
            for k, v in last.items():
                window[k] = window.get(k, 0.0) + v
            n_window += 1
            wait_window += wait
            samples_window += len(batch)
            if self.step % cfg.log_every == 0 or self.step == self.end_step or self.step == start + 1:
                elapsed = max(1e-9, time.monotonic() - t_window)
                rec = {k: v / n_window for k, v in window.items()}
                rec["lr"], rec["logit_scale"] = last["lr"], last["logit_scale"]
                counts = torch.tensor([samples_window, *self.loader.totals.values()], dtype=torch.float64)
                counts = tdist.all_reduce_sum(counts)
                rec["samples_per_s"] = float(counts[0]) / elapsed
                rec["data_wait_s"] = wait_window / n_window
                rec["step_s"] = elapsed / n_window
                rec["data_wait_share"] = wait_window / elapsed  # of this interval's wall time
                rec.update({f"data/{k}": float(v) for k, v in zip(self.loader.totals, counts[1:].tolist())})
                if self.logger is not None:
                    self.logger.write(rec, self.step)
                log.info(progress.line(self.step, f"loss {rec['loss']:.4f} | scale {rec['temperature_scale']:.1f} "
                                                  f"| lr {rec['lr']:.2e} | {rec['samples_per_s']:.1f} samples/s "
                                                  f"| data wait {rec['data_wait_s'] * 1000:.0f} ms ({100 * rec['data_wait_share']:.0f}%)"))  # fmt: skip
                window, n_window, wait_window, samples_window, t_window = {}, 0, 0.0, 0, time.monotonic()
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == self.end_step):
                self.validate()
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step != self.end_step:
                self.save()
        self.save()
        return self.finish(last)

    def finish(self, last: dict[str, float]) -> dict[str, Any]:

        summary: dict[str, Any] = {}
        if self.info.is_main:
            self.export(self.out / "model")
            assert self.logger is not None
            self.logger.close()
            init = self.cfg.model.init
            origin = f"from {Path(init).name}" if init else "from an untrained seeded random init"
            png = plot_losses(self.logger.path, self.out / "loss_curves.png", origin)
            summary = {
                "init": init or f"untrained: seeded random init (seed {self.cfg.seed})",
                "steps": self.step,
                "total_steps": self.total_steps,
                "last": last,
                "best": self.best,
                "data": self.loader.totals,
                "model_dir": str(self.out / "model"),
                "loss_curves": str(png) if png else None,
            }
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
            log.info("done: %d steps; final model in %s", self.step, self.out / "model")
        tdist.barrier()
        return summary


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train with ``cfg``; returns the summary (rank 0; {} elsewhere)."""
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        if trainer.logger is not None:
            trainer.logger.close()
        tdist.destroy()


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 trained, 2 a user error (one line), 130 interrupted (a rerun resumes)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        print(
            "usage: python -m trainer.train [--check] CONFIG.yaml [--key value ...]\n\n"
            "--check: check the config and every input and output path, then exit (trainer/run.sh runs\n"
            "this once before torchrun)\n\nconfig keys (--a.b or a unique leaf name):"
        )
        print("  " + "\n  ".join(config_keys()))
        return 0 if args else 2
    check_only = args[0] == "--check"
    if check_only:
        args.pop(0)
    if not args:
        raise UserError("no config given (usage: python -m trainer.train CONFIG.yaml [--key value ...])")
    config = args.pop(0) if not args[0].startswith("--") else None
    cfg = load_config_checked(config, args)
    # Under torchrun, trainer/run.sh has already read the initial weights once with --check.
    check_train_inputs(cfg, read_init=check_only or "LOCAL_RANK" not in os.environ)
    if check_only:
        print(f"config ok: {config or '(defaults)'} -> {cfg.out_dir}")
        return 0
    try:
        run(cfg)
    except (AnnotationError, RetrievalDataError, FileNotFoundError) as err:  # the data set-up: one line
        raise UserError(str(err)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
