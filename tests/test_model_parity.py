"""Numerical parity with transformers' CLIP on the same random weights (tolerance 1e-5), loading a local
HF CLIP directory, and save_pretrained output readable by transformers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tiny_hf_clip import random_hf_clip  # noqa: E402
from transformers import (  # noqa: E402
    CLIPModel,
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
)

from trainer.model import from_pretrained, save_pretrained, tiny_config  # noqa: E402

TOL = 1e-5
VOCAB = 99


def _hf_clip(eos_token_id: int, seed: int = 0) -> CLIPModel:
    return random_hf_clip(
        text=dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            bos_token_id=VOCAB - 2,
            eos_token_id=eos_token_id,
            pad_token_id=VOCAB - 1,
            projection_dim=24,
        ),
        vision=dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=24,
        ),
        projection_dim=24,
        seed=seed,
    )


def _text_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB - 2, (4, 12), generator=g)
    ids[:, 0] = VOCAB - 2
    ends = [5, 11, 3, 1]
    for row, end in enumerate(ends):
        ids[row, end:] = VOCAB - 1  # EOT, then EOT padding (HF CLIP pads with EOT)
    mask = (torch.arange(12)[None] <= torch.tensor(ends)[:, None]).long()
    return ids, mask


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CLIPModel]:
    model = _hf_clip(eos_token_id=VOCAB - 1)
    path = tmp_path_factory.mktemp("hf_clip")
    model.save_pretrained(path)
    return path, model


def test_vision_tower_equals_hf(hf_dir: tuple[Path, CLIPModel]) -> None:
    path, hf = hf_dir
    ref = CLIPVisionModelWithProjection(hf.config.vision_config).eval()
    ref.vision_model.load_state_dict(hf.vision_model.state_dict())
    ref.visual_projection.load_state_dict(hf.visual_projection.state_dict())
    ours = from_pretrained(path, num_proxies=0).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = F.normalize(ref(pixel_values=x).image_embeds, dim=-1)
        got = ours.encode_video(x.unsqueeze(1))
        got_image = ours.encode_image(x)
    assert (got - expected).abs().max().item() <= TOL
    assert torch.equal(got, got_image)


@pytest.mark.parametrize("eos_token_id", [VOCAB - 1, 2])
def test_text_tower_equals_hf(tmp_path: Path, eos_token_id: int) -> None:
    hf = _hf_clip(eos_token_id=eos_token_id, seed=eos_token_id)
    hf.save_pretrained(tmp_path)
    ref = CLIPTextModelWithProjection(hf.config.text_config).eval()
    ref.text_model.load_state_dict(hf.text_model.state_dict())
    ref.text_projection.load_state_dict(hf.text_projection.state_dict())
    ours = from_pretrained(tmp_path).eval()
    ids, mask = _text_batch()
    with torch.no_grad():
        expected = F.normalize(ref(input_ids=ids, attention_mask=mask).text_embeds, dim=-1)
        got = ours.encode_text(ids, mask)
    assert (got - expected).abs().max().item() <= TOL


def test_hf_load_report_and_logit_scale(hf_dir: tuple[Path, CLIPModel]) -> None:
    path, _ = hf_dir
    model = from_pretrained(path)
    report = model.load_report
    assert report.source == "hf" and report.ok
    assert set(report.expected_missing) == {
        "vision_model.embeddings.added_cls",
        "vision_model.embeddings.temporal_embedding",
    }
    assert model.config.num_proxies == 3 and model.config.num_frames == 12
    assert model.logit_scale.item() == pytest.approx(4.60)
    assert torch.count_nonzero(model.vision_model.embeddings.temporal_embedding) == 0


def test_proxies_change_the_video_feature(hf_dir: tuple[Path, CLIPModel]) -> None:
    path, _ = hf_dir
    plain = from_pretrained(path, num_proxies=0).eval()
    vip = from_pretrained(path, num_proxies=3).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain.encode_video(x), vip.encode_video(x), atol=1e-4)


def test_saved_dir_is_readable_by_transformers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    from trainer.model import CLIPViP

    ours = CLIPViP(tiny_config(num_proxies=0)).eval()
    save_pretrained(ours, tmp_path)
    hf = CLIPModel.from_pretrained(tmp_path).eval()
    assert hf.config.clipvip["num_proxies"] == 0
    x = torch.randn(2, 3, 64, 64)
    ids = torch.randint(0, 700, (2, 10))
    ids[:, -1] = ours.config.text.eos_token_id
    mask = torch.ones_like(ids)
    with torch.no_grad():
        hv = hf.get_image_features(pixel_values=x)
        ht = hf.get_text_features(input_ids=ids, attention_mask=mask)
        hv = getattr(hv, "pooler_output", hv)
        ht = getattr(ht, "pooler_output", ht)
        assert (F.normalize(hv, dim=-1) - ours.encode_image(x)).abs().max().item() <= TOL
        assert (F.normalize(ht, dim=-1) - ours.encode_text(ids, mask)).abs().max().item() <= TOL


def test_hf_dir_with_pytorch_model_bin(hf_dir: tuple[Path, CLIPModel], tmp_path: Path) -> None:
    path, hf = hf_dir
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    a = from_pretrained(path).eval()
    b = from_pretrained(tmp_path).eval()
    assert b.load_report.ok
    ids, mask = _text_batch()
    with torch.no_grad():
        assert torch.equal(a.encode_text(ids, mask), b.encode_text(ids, mask))
