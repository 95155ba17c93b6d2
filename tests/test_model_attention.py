"""ViP-guided attention: efficient kernel == dense masked reference (outputs and gradients), mask facts,
temporal-embedding interpolation facts, and whole-tower equivalence."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from trainer.model import CLIPViP, tiny_config
from trainer.model.attention import dense_vip_attention, reference_attention, vip_attention, vip_mask
from trainer.model.vision import resize_temporal

TOL = 1e-5


def _qkv(b: int, h: int, n: int, d: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize(
    "frames,proxies,frame_len",
    [(1, 3, 7), (2, 0, 5), (3, 1, 4), (4, 3, 9), (12, 3, 4), (5, 8, 3), (7, 2, 1)],
)
def test_vip_attention_matches_dense_reference(frames: int, proxies: int, frame_len: int) -> None:
    m = 1 + proxies
    n = m + frames * frame_len
    q, k, v = _qkv(2, 3, n, 8, seed=frames * 100 + proxies)
    out = vip_attention(q, k, v, num_global=m, num_frames=frames)
    ref = dense_vip_attention(q, k, v, num_global=m, num_frames=frames)
    assert (out - ref).abs().max().item() <= TOL
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, grads_ref, strict=True):
        assert (a - b).abs().max().item() <= TOL


def test_vip_attention_float32_close() -> None:
    q, k, v = (t.detach().float() for t in _qkv(2, 4, 4 + 6 * 10, 16, seed=3))
    out = vip_attention(q, k, v, num_global=4, num_frames=6)
    ref = dense_vip_attention(q, k, v, num_global=4, num_frames=6)
    assert (out - ref).abs().max().item() <= TOL


def test_single_frame_is_plain_full_attention() -> None:
    q, k, v = _qkv(2, 2, 4 + 9, 8, seed=5)
    out = vip_attention(q, k, v, num_global=4, num_frames=1)
    assert (out - reference_attention(q, k, v)).abs().max().item() <= TOL
    assert bool(vip_mask(4, 1, 9).all())


def test_vip_mask_definition() -> None:
    m, t, length = 3, 4, 2
    mask = vip_mask(m, t, length)
    n = m + t * length
    for qi in range(n):
        for ki in range(n):
            same_frame = qi >= m and ki >= m and (qi - m) // length == (ki - m) // length
            assert bool(mask[qi, ki]) == (qi < m or ki < m or same_frame)


def test_patches_do_not_see_other_frames() -> None:
    m, t, length = 2, 3, 4
    q, k, v = (x.detach() for x in _qkv(1, 2, m + t * length, 8, seed=9))
    out = vip_attention(q, k, v, num_global=m, num_frames=t)
    v2, k2 = v.clone(), k.clone()
    frame2 = slice(m + 2 * length, m + 3 * length)
    v2[:, :, frame2] += 5.0
    k2[:, :, frame2] -= 3.0
    out2 = vip_attention(q, k2, v2, num_global=m, num_frames=t)
    # Frames 0 and 1 patches are untouched; global tokens and frame 2 change.
    assert torch.equal(out[:, :, m : m + 2 * length], out2[:, :, m : m + 2 * length])
    assert not torch.allclose(out[:, :, :m], out2[:, :, :m])


def test_bad_layout_raises() -> None:
    q, k, v = (x.detach() for x in _qkv(1, 1, 4 + 7, 4, seed=1))
    with pytest.raises(ValueError, match="equal frames"):
        vip_attention(q, k, v, num_global=4, num_frames=2)


def test_temporal_interpolation_facts() -> None:
    table = torch.randn(1, 12, 6)
    one = resize_temporal(table, 1)
    assert one.shape == (1, 1, 6)
    assert torch.allclose(one[0, 0], (table[0, 5] + table[0, 6]) / 2, atol=1e-6)
    assert resize_temporal(table, 12) is table
    t32 = resize_temporal(table, 32)
    assert t32.shape == (1, 32, 6)
    # align_corners=False: frame i reads source index 0.375*(i+0.5)-0.5, clamped to [0, 11].
    ramp = resize_temporal(torch.arange(12.0).view(1, 12, 1), 32).flatten()
    src = (0.375 * (torch.arange(32.0) + 0.5) - 0.5).clamp(0, 11)
    assert torch.allclose(ramp, src, atol=1e-6)
    assert torch.allclose(t32[0, 0], table[0, 0]) and torch.allclose(
        t32[0, 1], table[0, 0] * 0.9375 + table[0, 1] * 0.0625, atol=1e-6
    )
    assert torch.allclose(t32[0, -1], table[0, -1])


def test_single_frame_gets_middle_temporal_value() -> None:
    torch.manual_seed(0)
    emb = CLIPViP(tiny_config(num_proxies=2)).vision_model.embeddings
    x = torch.randn(2, 1, 3, 64, 64)
    with torch.no_grad():
        plain = emb(x)
        table = torch.randn_like(emb.temporal_embedding)
        emb.temporal_embedding.copy_(table)
        delta = emb(x) - plain
    assert torch.allclose(delta[:, :3], torch.zeros_like(delta[:, :3]))  # CLS and proxies: no temporal term
    middle = (table[0, 5] + table[0, 6]) / 2
    assert torch.allclose(delta[:, 3:], middle.expand_as(delta[:, 3:]), atol=1e-5)


@pytest.mark.parametrize("frames", [1, 3, 12])
def test_whole_tower_efficient_equals_dense(frames: int) -> None:
    torch.manual_seed(1)
    model = CLIPViP(tiny_config(num_proxies=3)).double().eval()
    tower = model.vision_model
    x = torch.randn(2, frames, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    fast = tower.forward_tokens(x)
    dense = tower.forward_tokens(x, attend=partial(dense_vip_attention, num_global=4, num_frames=frames))
    assert (fast - dense).abs().max().item() <= TOL
    g = torch.randn_like(fast)
    (gx,) = torch.autograd.grad(fast, x, g)
    (gx_ref,) = torch.autograd.grad(dense, x, g)
    assert (gx - gx_ref).abs().max().item() <= TOL


def test_proxies_and_cls_share_position_zero() -> None:
    torch.manual_seed(2)
    model = CLIPViP(tiny_config(num_proxies=3))
    emb = model.vision_model.embeddings
    tokens = emb(torch.randn(1, 2, 3, 64, 64))
    pos0 = emb.position_embedding.weight[0]
    assert torch.allclose(tokens[0, 0], emb.class_embedding + pos0)
    assert torch.allclose(tokens[0, 1:4], emb.added_cls + pos0)
    assert tokens.shape[1] == 4 + 2 * emb.cfg.num_patches
    # Proxies start unit-Gaussian (std near 1), not CLIP's 0.02 init.
    assert 0.5 < emb.added_cls.std().item() < 1.5


def test_full_attention_head_differs_from_vip() -> None:
    torch.manual_seed(3)
    vip = CLIPViP(tiny_config(video_head="vip")).eval()
    full = CLIPViP(tiny_config(video_head="full")).eval()
    full.load_state_dict(vip.state_dict())
    x = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        tok_vip = vip.vision_model.forward_tokens(x)
        tok_full = full.vision_model.forward_tokens(x)
        a1, b1 = vip.encode_video(x[:, :1]), full.encode_video(x[:, :1])
    # Patch tokens see other frames only under full attention.
    assert (tok_vip[:, 4:] - tok_full[:, 4:]).abs().max().item() > 1e-3
    assert (a1 - b1).abs().max().item() <= TOL  # one frame: the two are identical
