"""CLIP2Video's Temporal Alignment Block through the model: features, fused score, fine-tuning with
clip2video_loss through trainer.train, and evaluation on the fused similarity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from trainer.config import EvalConfig, load_config
from trainer.data.frames import load_clip
from trainer.data.retrieval import load_split, resolve_videos
from trainer.eval.retrieval import evaluate_model, score
from trainer.model import CLIPViP, from_pretrained, tiny_config
from trainer.model.clip2video import clip2video_loss
from trainer.model.tokenizer import load_clip_tokenizer
from trainer.train import main as train_main

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "finetune_synthetic_tiny.yaml"
TAB = ["--model.video_head", "clip2video", "--model.clip2video", "{tab: true}"]


def _tab_model(**c2v) -> CLIPViP:
    torch.manual_seed(0)
    return CLIPViP(tiny_config(video_head="clip2video", clip2video={"tab": True, **c2v}))


def _text(model: CLIPViP) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 700, (3, 9))
    mask = torch.ones_like(ids)
    ids[:, 6:] = model.config.text.eos_token_id  # EOT at 6, then padding (same id)
    mask[:, 7:] = 0
    mask[1, 5:] = 0
    ids[1, 4:] = model.config.text.eos_token_id  # a shorter text
    return ids, mask


def test_tab_through_the_model_shapes_tokens_and_gradients() -> None:
    model = _tab_model().train()
    assert model.uses_tab and not CLIPViP(tiny_config(video_head="clip2video")).uses_tab
    pixels = torch.randn(3, 4, 3, 64, 64)
    ids, mask = _text(model)
    # per-token text states: the projected final-layernormed states, pooled at EOT = encode_text
    feats, tokens, tmask = model.encode_text(ids, mask, return_tokens=True)
    assert tokens.shape == (3, 9, 32) and torch.equal(tmask, mask)
    ref_tokens = model.text_projection(model.text_model.token_states(ids, mask))
    torch.testing.assert_close(tokens, ref_tokens)
    torch.testing.assert_close(feats, model.encode_text(ids, mask), atol=1e-6, rtol=1e-6)
    g_t, z_t = model.clip2video_text(ids, mask)
    torch.testing.assert_close(z_t, model.video_head.tab_text(tokens, mask))
    # video: the TDB feature is encode_video's; the TAB feature aggregates the head's input frames
    g_v, z_v = model.clip2video_video(pixels)
    torch.testing.assert_close(g_v, model.encode_video(pixels), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(z_v, model.video_head.tab_video(model.frame_features(pixels)))
    for x in (g_t, z_t, g_v, z_v):
        assert x.shape == (3, 32)
        torch.testing.assert_close(x.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    loss = clip2video_loss(model.logit_scale, g_t, g_v, z_t, z_v, model.video_head.center_weight)
    loss.backward()
    grads = dict(model.named_parameters())
    missing = [n for n, p in grads.items() if p.grad is None]
    assert missing == []
    for name in ("video_head.weight_center", "video_head.emb_center", "logit_scale"):
        assert grads[name].grad.abs().sum() > 0, name
    assert any(
        p.grad.abs().sum() > 0 for n, p in grads.items() if n.startswith("video_head.action_transformer.")
    )
    with pytest.raises(RuntimeError, match="tab"):
        CLIPViP(tiny_config(video_head="seqtransf")).clip2video_video(pixels)


def test_fused_similarity_is_lambda_mix_of_global_and_tab() -> None:
    model = _tab_model(center_weight=0.3).eval()
    pixels = torch.randn(4, 4, 3, 64, 64)
    ids, mask = _text(model)
    with torch.no_grad():
        t, v = model.clip2video_text(ids, mask), model.clip2video_video(pixels)
        sim = model.clip2video_similarity(t, v)
        scale = model.logit_scale.exp()
        s_g, s_tab = scale * t[0] @ v[0].T, scale * t[1] @ v[1].T  # CLIP2Video's two logits
        assert sim.shape == (3, 4)
        torch.testing.assert_close(scale * sim, 0.3 * s_g + 0.7 * s_tab, atol=1e-5, rtol=1e-5)
        # what evaluation ranks: products of the fused embeddings (one [Q, V] matmul)
        fused = model.retrieval_text(ids, mask) @ model.retrieval_video(pixels).T
        torch.testing.assert_close(fused, sim, atol=1e-6, rtol=1e-6)
        # the TAB branch matters: the mix differs from the global score alone
        assert (sim - t[0] @ v[0].T).abs().max() > 1e-3


def test_tab_config_checks() -> None:
    with pytest.raises(ValueError, match="loss 'vs'"):
        load_config(CONFIG, [*TAB, "--loss", "vsc_fc"])
    with pytest.raises(ValueError, match="video_head"):
        load_config(CONFIG, ["--model.clip2video", "{tab: true}"])  # the config's head is vip
    cfg = load_config(CONFIG, TAB)
    assert cfg.model.clip2video == {"tab": True}


@pytest.fixture
def downstream_cwd(synthetic_corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared 4/2/2 downstream set where the tiny config expects it (runs/demo/corpus)."""
    (tmp_path / "runs/demo").mkdir(parents=True)
    (tmp_path / "runs/demo/corpus").symlink_to(synthetic_corpus.downstream.parent)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_finetune_with_tab_lowers_the_loss_and_evaluates(downstream_cwd: Path) -> None:
    out = downstream_cwd / "run"
    args = [str(CONFIG), *TAB, "--out_dir", str(out), "--data.num_frames", "4"]
    # from scratch, a tiny model sits at chance (ln 4) for ~40 steps before it separates the 4 videos
    args += ["--data.retrieval.num_frames", "4", "--eval_every", "0", "--total_steps", "70"]
    args += ["--schedule.warmup_ratio", "0.1", "--data.num_workers", "0", "--data.batch_size", "4"]
    args += ["--log_every", "1"]
    assert train_main(args) == 0
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "loss/tab" in r]
    assert len(recs) == 70
    for r in recs:  # the logged loss is clip2video_loss: lambda Lsym(s_g) + (1 - lambda) Lsym(s_TAB)
        assert math.isclose(r["loss"], 0.5 * r["loss/global"] + 0.5 * r["loss/tab"], rel_tol=1e-5)
    first = sum(r["loss"] for r in recs[:5]) / 5
    last = sum(r["loss"] for r in recs[-5:]) / 5
    assert last < 0.5 * first and last < math.log(4) - 0.3, (first, last)  # well below chance

    model = from_pretrained(out / "model")
    assert model.uses_tab  # the saved config keeps tab on
    tok = load_clip_tokenizer(out / "model")
    cfg = load_config(CONFIG, TAB)
    ecfg = EvalConfig(**{**cfg.eval.__dict__, "split": "train", "num_frames": 4, "num_workers": 0})
    res = evaluate_model(model, tok, ecfg, "cpu")
    assert res["videos_evaluated"] == 4 and res["queries_evaluated"] == 20 and res["metrics"] is not None
    # the metrics are those of the fused score lambda s_g + (1 - lambda) s_TAB, computed by hand
    rset = load_split(ecfg, "train")
    paths = resolve_videos(rset, Path(ecfg.videos)).paths
    texts, owner = rset.queries()
    model.eval()
    with torch.no_grad():
        pixels = torch.stack(
            [load_clip(p, 4, model.config.vision.image_size, span=v.span) for p, v in zip(paths, rset.videos)]
        )
        ids, mask = tok(texts, ecfg.max_text_len)
        sim = model.clip2video_similarity(model.clip2video_text(ids, mask), model.clip2video_video(pixels))
    ref = score(sim, owner, ecfg.dsl_temperature)
    for variant in ("plain", "dsl"):
        for direction in ("t2v", "v2t"):
            for k, val in ref[variant][direction].items():
                assert res["metrics"][variant][direction][k] == pytest.approx(val, abs=1e-6), (variant, k)


def test_loading_clip_weights_starts_the_head_from_the_text_transformer(tmp_path: Path) -> None:
    from trainer.model import save_pretrained

    torch.manual_seed(6)
    src = CLIPViP(tiny_config(projection_dim=64, text_intermediate_size=256))  # head-compatible text tower
    save_pretrained(src, tmp_path / "clip")
    model = from_pretrained(tmp_path / "clip", video_head="clip2video", clip2video={"tab": True, "heads": 4})
    assert (
        model.uses_tab and "clip2video head initialised from the text transformer" in model.load_report.notes
    )
    text, head = model.text_model, model.video_head
    for enc in (head.transformer, head.difference_transformer, head.action_transformer):
        torch.testing.assert_close(enc.layers[0].mlp.fc1.weight, text.encoder.layers[0].mlp.fc1.weight)
    pos = text.embeddings.position_embedding.weight
    torch.testing.assert_close(head.frame_position_embeddings.weight[: pos.shape[0]], pos)
    # a checkpoint that has the head keeps it (no re-init from the text tower)
    with torch.no_grad():
        model.video_head.transformer.layers[0].mlp.fc1.weight.add_(1.0)
    save_pretrained(model, tmp_path / "c2v")
    again = from_pretrained(tmp_path / "c2v")
    torch.testing.assert_close(
        again.video_head.transformer.layers[0].mlp.fc1.weight,
        model.video_head.transformer.layers[0].mlp.fc1.weight,
    )
    # mismatched shapes (tiny default: text MLP 128 != 4 * 64) keep the random init, as for seqTransf
    save_pretrained(CLIPViP(tiny_config(projection_dim=64)), tmp_path / "clip_small")
    other = from_pretrained(tmp_path / "clip_small", video_head="clip2video", clip2video={"heads": 4})
    assert not any("initialised from the text" in n for n in other.load_report.notes)


def test_shipped_clip2video_config_turns_tab_on() -> None:
    cfg = load_config(CONFIG.parent / "finetune_msrvtt_clip2video_b32.yaml")
    assert cfg.model.video_head == "clip2video" and cfg.loss == "vs"
    assert cfg.model.clip2video == {"tab": True, "centers": 5, "center_weight": 0.5}
    assert cfg.data.max_text_len == 32 and cfg.data.num_frames == 12
    assert math.isclose(cfg.optim.lr * cfg.optim.lr_mul, 1e-4)
    # the config's head builds (tiny towers stand in for the CLIP weights it names)
    model = CLIPViP(tiny_config(video_head="clip2video", clip2video=cfg.model.clip2video))
    assert model.uses_tab and model.video_head.weight_center.shape == (5, 32)
