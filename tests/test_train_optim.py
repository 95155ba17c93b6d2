"""Parameter groups (no-decay rules), LR schedule values, precision resolution, config loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trainer.config import load_config
from trainer.loop.optim import build_optimizer, no_decay_names, param_groups
from trainer.loop.precision import resolve_precision
from trainer.loop.scheduler import LRSchedule, total_steps
from trainer.model import CLIPViP, tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> CLIPViP:
    torch.manual_seed(0)
    return CLIPViP(tiny_config())


def test_norms_biases_rule(model: CLIPViP) -> None:
    nd = no_decay_names(model, "norms_biases")
    names = dict(model.named_parameters())
    assert "logit_scale" in nd
    assert "vision_model.pre_layrnorm.weight" in nd and "vision_model.post_layernorm.weight" in nd
    assert "text_model.final_layer_norm.weight" in nd
    assert all(n in nd for n in names if n.endswith(".bias"))
    assert all(n in nd for n in names if "layer_norm" in n)
    # Weights, embeddings, proxies and the temporal table keep decay, as in the official code.
    for n in ("visual_projection.weight", "vision_model.embeddings.added_cls",
              "vision_model.embeddings.temporal_embedding", "text_model.embeddings.token_embedding.weight"):  # fmt: skip
        assert n in names and n not in nd, n


def test_official_rule_misses_layer_norm_gains(model: CLIPViP) -> None:
    nd = no_decay_names(model, "official")
    assert "logit_scale" in nd and "vision_model.post_layernorm.bias" in nd
    assert "vision_model.post_layernorm.weight" not in nd  # the documented quirk (CLIPVIP.md §4.3)
    assert "text_model.final_layer_norm.weight" not in nd


def test_param_groups_cover_every_parameter_once(model: CLIPViP) -> None:
    groups = param_groups(model, 0.05, "norms_biases", lr_mul=10.0, lr_mul_prefix="logit_scale")
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    by = {g["group"]: g for g in groups}
    assert by["lr_mul/no_decay"]["names"] == ["logit_scale"] and by["lr_mul/no_decay"]["lr_mul"] == 10.0
    assert by["base/decay"]["weight_decay"] == 0.05 and by["base/no_decay"]["weight_decay"] == 0.0
    cfg = load_config(None, ["--optim.lr_mul", "10", "--optim.lr_mul_prefix", "logit_scale"])
    opt = build_optimizer(model, cfg)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6 and opt.defaults["lr"] == 5e-6
    sched = LRSchedule.from_ratio(cfg.optim.lr, 100, 0.0)
    sched.apply(opt, 0)
    lrs = {g["group"]: g["lr"] for g in opt.param_groups}
    assert lrs["lr_mul/no_decay"] == pytest.approx(5e-5) and lrs["base/decay"] == pytest.approx(5e-6)


def test_schedule_values() -> None:
    s = LRSchedule.from_ratio(5e-6, 1000, 0.01)  # warmup int(0.01 * 1000) = 10 steps
    assert s.warmup_steps == 10
    assert s.lr(0) == 1e-8  # 0 -> floor
    assert s.lr(5) == pytest.approx(2.5e-6)
    assert s.lr(10) == pytest.approx(5e-6)
    mid = 10 + (1000 - 10) // 2
    assert s.lr(mid) == pytest.approx(5e-6 * 0.5 * (1 + math.cos(math.pi * 495 / 990)))
    assert s.lr(505) == pytest.approx(2.5e-6)
    assert s.lr(999) == pytest.approx(max(5e-6 * 0.5 * (1 + math.cos(math.pi * 989 / 990)), 1e-8))
    assert s.lr(1000) == 1e-8 and s.lr(5000) == 1e-8
    lin = LRSchedule.from_ratio(1.0, 100, 0.1, kind="linear")
    assert lin.lr(55) == pytest.approx(0.5)
    assert LRSchedule.from_ratio(1.0, 100, 0.1, kind="constant").lr(99) == 1.0
    assert total_steps(5, 1000, 64) == math.ceil(5 * 1000 / 64)


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32"
    assert resolve_precision("bf16", cpu).scaler is None
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve_precision("fp16", cpu)


def test_shipped_configs_load() -> None:
    for name in ("pretrain_b32", "pretrain_b16", "tiny_cpu"):
        cfg = load_config(REPO / "trainer" / "configs" / f"{name}.yaml")
        assert cfg.loss == "vsc_fc"
    b32 = load_config(REPO / "trainer" / "configs" / "pretrain_b32.yaml")
    assert (b32.data.batch_size, b32.optim.lr, b32.optim.weight_decay, b32.optim.grad_norm) == (
        32,
        5e-6,
        0.05,
        5.0,
    )
    assert (b32.data.max_text_len, b32.schedule.warmup_ratio, b32.schedule.epochs) == (70, 0.01, 5.0)
    assert load_config(REPO / "trainer" / "configs" / "pretrain_b16.yaml").data.batch_size == 16


def test_config_overrides_and_errors() -> None:
    cfg = load_config(None, ["--lr", "1e-5", "--data.shards", "[a, b]", "--eval_every=5", "--loss", "vs"])
    assert cfg.optim.lr == 1e-5 and cfg.data.shards == ["a", "b"] and cfg.eval_every == 5
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["--nope", "1"])
    with pytest.raises(ValueError, match="ambiguous"):
        load_config(None, ["--num_frames", "8"])
    with pytest.raises(ValueError, match="loss must be one of"):
        load_config(None, ["--loss", "mean"])
    with pytest.raises(ValueError, match="expected"):
        load_config(None, ["--data.batch_size", "many"])
