"""CLIP2Video head (TDB + TAB): shapes, masks, gradient flow, reference interleave, and that it learns order."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.model.clip2video import CLIP2VideoHead, clip2video_loss, interleave_index, symmetric_ce


def test_interleave_index_matches_loop() -> None:
    for t in (1, 2, 5, 12):
        ref = []
        for i in range(t):
            ref.append(i)
            if i < t - 1:
                ref.append(t + i)
        assert interleave_index(t).tolist() == ref


def _reference_tdb(head: CLIP2VideoHead, f: torch.Tensor) -> torch.Tensor:
    """Step-by-step TDB with explicit Python loops (CLIP2VIDEO.md §2), no masks."""
    from functools import partial

    from trainer.model.attention import full_attention

    attend = partial(full_attention, dropout_p=0.0)
    b, t, w = f.shape
    pos, typ = head.frame_position_embeddings.weight, head.type_position_embeddings.weight
    diffs = torch.stack([f[:, i + 1] - f[:, i] for i in range(t - 1)], dim=1)
    enc1 = head.difference_transformer(diffs + torch.stack([pos[i + 1] for i in range(t - 1)]), attend)
    d_hat = 2 * torch.sigmoid(head.difference_norm(enc1)) - 1
    seq = []
    for i in range(t):
        seq.append(f[:, i] + pos[i] + typ[1])
        if i < t - 1:
            seq.append(d_hat[:, i] + pos[i] + typ[0])
    h = head.transformer(torch.stack(seq, dim=1), attend)
    v = torch.stack([h[:, 2 * i] + f[:, i] for i in range(t)], dim=1)
    return F.normalize(F.normalize(v, dim=-1).mean(dim=1), dim=-1)


def test_tdb_matches_reference_and_shapes() -> None:
    torch.manual_seed(0)
    head = CLIP2VideoHead(64, 12)
    f = torch.randn(3, 12, 64)
    out = head(f)
    assert out.shape == (3, 64)
    torch.testing.assert_close(F.normalize(out, dim=-1), _reference_tdb(head, f), atol=1e-5, rtol=1e-5)
    # paper defaults: 4-block temporal transformer, 1-block difference attention, heads = width/64
    assert len(head.transformer.layers) == 4 and len(head.difference_transformer.layers) == 1
    assert head.transformer.layers[0].self_attn.heads == 1
    assert CLIP2VideoHead(512, 12).transformer.layers[0].self_attn.heads == 8
    # frame count other than the configured one, and T=1
    assert head(torch.randn(2, 5, 64)).shape == (2, 64)
    assert head(torch.randn(2, 1, 64)).shape == (2, 64)
    with pytest.raises(ValueError):
        head(torch.randn(2, 12, 32))


def test_frame_mask_ignores_padded_frames() -> None:
    torch.manual_seed(1)
    head = CLIP2VideoHead(32, 12).eval()
    f = torch.randn(2, 12, 32)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 7:] = False
    out = head(f, mask)
    f2 = f.clone()
    f2[0, 7:] = torch.randn(5, 32) * 10  # garbage in padded frames must not matter
    torch.testing.assert_close(head(f2, mask), out, atol=1e-5, rtol=1e-5)
    # a fully valid mask equals no mask
    torch.testing.assert_close(head(f, torch.ones(2, 12, dtype=torch.bool)), head(f), atol=1e-6, rtol=1e-6)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(2)
    head = CLIP2VideoHead(32, 12, tab=True, centers=5)
    f = torch.randn(4, 12, 32, requires_grad=True)
    tokens = torch.randn(4, 9, 32, requires_grad=True)
    tmask = torch.ones(4, 9)
    tmask[1, 6:] = 0
    v = head(f)
    t = torch.randn(4, 32)
    loss = clip2video_loss(
        torch.tensor(math.log(100.0)), t, v, head.tab_text(tokens, tmask), head.tab_video(f)
    )
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert f.grad is not None and f.grad.abs().sum() > 0 and tokens.grad is not None


def test_tab_tokens_aggregation_and_fusion() -> None:
    torch.manual_seed(3)
    head = CLIP2VideoHead(32, 12, tab=True, centers=5)
    f = torch.randn(2, 12, 32)
    tokens, mask = head.tab_video_tokens(f)
    assert tokens.shape == (2, 12 + 6, 32) and mask.shape == (2, 18)  # T + ceil(T/2)
    assert head.tab_video_tokens(torch.randn(1, 11, 32))[0].shape[1] == 11 + 6
    torch.testing.assert_close(tokens[:, :12], f)  # raw frames come first
    # NetVLAD aggregation against a direct formula
    x = torch.randn(2, 7, 32)
    m = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    a = torch.softmax(x @ head.weight_center.T, dim=-1)
    ref = []
    for b in range(2):
        r = torch.stack(
            [sum(a[b, n, k] * (x[b, n] - head.emb_center[k]) for n in range(7) if m[b, n]) for k in range(5)]
        )
        ref.append(F.normalize(F.normalize(r, dim=-1).mean(0), dim=0))
    torch.testing.assert_close(head.aggregate(x, m), torch.stack(ref), atol=1e-5, rtol=1e-5)
    # text: SOT and padding are excluded
    ids_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    tt = head.tab_text(x[:, :4], ids_mask)
    torch.testing.assert_close(tt[0], head.aggregate(x[:1, 1:3], torch.ones(1, 2, dtype=torch.bool))[0])
    # fused embeddings: unit norm and dot product = lambda*s_g + (1-lambda)*s_tab
    g_t, g_v, z_t, z_v = (F.normalize(torch.randn(3, 32), dim=-1) for _ in range(4))
    s = head.fuse(g_t, z_t) @ head.fuse(g_v, z_v).T
    torch.testing.assert_close(s, 0.5 * g_t @ g_v.T + 0.5 * z_t @ z_v.T)
    torch.testing.assert_close(head.fuse(g_t, z_t).norm(dim=-1), torch.ones(3))
    with pytest.raises(RuntimeError):
        CLIP2VideoHead(32, 12).tab_video(f)


def test_symmetric_ce() -> None:
    s = torch.randn(5, 5)
    t = torch.arange(5)
    ref = (F.cross_entropy(s, t) + F.cross_entropy(s.T, t)) / 2
    torch.testing.assert_close(symmetric_ce(s), ref)


def test_tdb_learns_temporal_order_meanpool_cannot() -> None:
    """Each video moves its content along a fixed direction, forwards or backwards (the same frames in reverse
    order): a mean pool gives identical features for both, the TDB (differences + positions) must separate them."""
    torch.manual_seed(4)
    width, t = 32, 8
    direction = torch.randn(width)

    def batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = torch.randn(k, width)
        fwd = start[:, None] + torch.linspace(0, 1, t)[None, :, None] * direction
        x = torch.cat([fwd, fwd.flip(1)])
        y = torch.cat([torch.zeros(k, dtype=torch.long), torch.ones(k, dtype=torch.long)])
        return x, y

    head = CLIP2VideoHead(width, t, temporal_layers=1)
    texts = torch.nn.Parameter(torch.randn(2, width) * 0.1)  # "forwards" / "backwards" queries
    opt = torch.optim.AdamW([*head.parameters(), texts], lr=1e-2)
    losses = []
    for _ in range(25):
        x, y = batch(32)
        loss = F.cross_entropy(20 * F.normalize(head(x), dim=-1) @ F.normalize(texts, dim=-1).T, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    x, y = batch(200)
    with torch.no_grad():
        acc = ((F.normalize(head(x), dim=-1) @ texts.T).argmax(1) == y).float().mean().item()
        mean_pool = F.normalize(x, dim=-1).mean(1)
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    assert acc > 0.9, acc  # chance is 0.5
    torch.testing.assert_close(mean_pool[:200], mean_pool[200:])  # indistinguishable for a mean pool


def test_init_from_text_copies_clip_text_weights() -> None:
    from trainer.model import tiny_config
    from trainer.model.text import CLIPTextModel

    torch.manual_seed(5)
    text = CLIPTextModel(tiny_config(text_intermediate_size=256).text)  # width 64, 2 layers, 4 heads, MLP 4x
    head = CLIP2VideoHead(64, 12, heads=4, tab=True)
    assert head.init_from_text(text)
    pos = text.embeddings.position_embedding.weight
    n = min(pos.shape[0], 77)
    torch.testing.assert_close(head.frame_position_embeddings.weight[:n], pos[:n])
    torch.testing.assert_close(head.type_position_embeddings.weight, pos[:2])
    for enc in (head.transformer, head.difference_transformer, head.action_transformer):
        torch.testing.assert_close(enc.layers[0].mlp.fc1.weight, text.encoder.layers[0].mlp.fc1.weight)
    torch.testing.assert_close(
        head.transformer.layers[1].self_attn.q_proj.weight, text.encoder.layers[1].self_attn.q_proj.weight
    )
    assert not CLIP2VideoHead(32, 12).init_from_text(text)  # width mismatch keeps the random init
    other = CLIP2VideoHead(64, 12, heads=4)
    before = other.transformer.layers[0].mlp.fc1.weight.clone()
    assert not other.init_from_text(CLIPTextModel(tiny_config().text))  # MLP 128 != 4*64: nothing copied
    torch.testing.assert_close(other.transformer.layers[0].mlp.fc1.weight, before)
