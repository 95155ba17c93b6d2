"""The model a training or evaluation config asks for: loaded weights or a seeded tiny random model."""

from __future__ import annotations

from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.model.clipvip import CLIPViP
from trainer.model.config import tiny_config
from trainer.model.weights import from_pretrained


def build_model(cfg: TrainConfig, tokenizer: Any, init: str | None = None) -> CLIPViP:
    """The model as configured; ``init`` (e.g. a checkpoint to evaluate) replaces ``model.init``."""
    m = cfg.model
    init = init or m.init
    if init:
        model = from_pretrained(
            init,
            num_proxies=m.num_proxies,
            num_frames=m.num_frames,
            video_head=m.video_head,
            clip2video=m.clip2video,
        )
    elif m.tiny:
        over = dict(m.tiny_overrides)
        if m.clip2video is not None:
            over["clip2video"] = dict(m.clip2video)
        over.setdefault("text_vocab", len(tokenizer))
        over.setdefault("text_context_length", max(cfg.data.max_text_len, cfg.eval.max_text_len))
        model = CLIPViP(
            tiny_config(num_proxies=m.num_proxies, num_frames=m.num_frames, video_head=m.video_head, **over)
        )
    else:
        raise ValueError(
            "set model.init (a CLIP / CLIP-ViP checkpoint or a previous run) or model.tiny: true"
        )
    if m.logit_scale_init is not None:
        with torch.no_grad():
            model.logit_scale.fill_(m.logit_scale_init)
    text_vocab = model.config.text.vocab
    if len(tokenizer) > text_vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} entries but the text tower only {text_vocab}")
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model
