"""Checkpoint formats: CLIP-ViP (`clipmodel.` prefix), OpenAI state dict and TorchScript archive,
our save_pretrained dirs; load reports, strictness, safe loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from trainer.model import CLIPViP, from_pretrained, save_pretrained, tiny_config
from trainer.model.weights import hf_to_openai, openai_to_hf

TOL = 1e-5


def _cfg(**kw):
    # Head counts are not stored in raw state dicts; CLIP's rule width // 64 must hold to infer them.
    return tiny_config(vision_width=128, vision_heads=2, text_width=128, text_heads=2, **kw)


def _model(seed: int = 0, **kw) -> CLIPViP:
    torch.manual_seed(seed)
    model = CLIPViP(_cfg(**kw)).eval()
    with torch.no_grad():
        model.vision_model.embeddings.temporal_embedding.normal_()
        model.logit_scale.fill_(3.3)
    return model


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 3, 64, 64, generator=g)
    ids = torch.randint(0, 700, (2, 12), generator=g)
    ids[0, 6:] = 767
    ids[1, 11] = 767
    mask = (ids != 767).long()
    mask[0, 6] = 1
    mask[1, 11] = 1
    return x, ids, mask


def _assert_same_outputs(a: CLIPViP, b: CLIPViP) -> None:
    x, ids, mask = _inputs()
    with torch.no_grad():
        assert (a.encode_video(x) - b.encode_video(x)).abs().max().item() <= TOL
        assert (a.encode_video(x[:, :1]) - b.encode_video(x[:, :1])).abs().max().item() <= TOL
        assert (a.encode_text(ids, mask) - b.encode_text(ids, mask)).abs().max().item() <= TOL


def test_clipvip_checkpoint_round_trip(tmp_path: Path) -> None:
    src = _model(num_proxies=2, num_frames=12)
    path = tmp_path / "pretrain_clipvip_base_32.pt"
    torch.save({"clipmodel." + k: v.half() for k, v in src.state_dict().items()}, path)
    loaded = from_pretrained(path).eval()
    assert loaded.load_report.source == "clipvip" and loaded.load_report.ok
    assert loaded.config.num_proxies == 2 and loaded.config.num_frames == 12
    assert loaded.logit_scale.item() == pytest.approx(3.3, abs=1e-2)  # kept, not reset to 4.6
    ref = _model(num_proxies=2, num_frames=12)
    ref.load_state_dict({k: v.half().float() for k, v in src.state_dict().items()})
    _assert_same_outputs(ref, loaded)


def test_clipvip_restore_format_and_temporal_resize(tmp_path: Path) -> None:
    src = _model(num_proxies=3)
    path = tmp_path / "restore.pt"
    state = {"clipmodel." + k: v for k, v in src.state_dict().items()}
    torch.save({"global_step": 10, "model_state_dict": state}, path)
    loaded = from_pretrained(path, num_frames=24)
    assert loaded.vision_model.embeddings.temporal_embedding.shape == (1, 24, 128)
    assert any("resized 12 -> 24" in n for n in loaded.load_report.notes)
    same = from_pretrained(path)
    _assert_same_outputs(src, same.eval())


def test_openai_state_dict_round_trip(tmp_path: Path) -> None:
    src = _model(num_proxies=0)
    with torch.no_grad():
        src.vision_model.embeddings.temporal_embedding.zero_()  # OpenAI CLIP has no temporal table
    clip_keys = {
        k: v
        for k, v in src.state_dict().items()
        if "added_cls" not in k and "temporal_embedding" not in k and not k.startswith("video_head")
    }
    openai = hf_to_openai(clip_keys)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in openai
    assert openai["visual.proj"].shape == (128, 32)
    back, rest = openai_to_hf(openai)
    assert not rest and set(back) == set(clip_keys)
    assert all(torch.equal(back[k], clip_keys[k]) for k in back)
    path = tmp_path / "ViT-tiny.pt"
    torch.save(openai, path)
    loaded = from_pretrained(path, num_proxies=0).eval()
    assert loaded.load_report.source == "openai" and loaded.load_report.ok
    assert loaded.logit_scale.item() == pytest.approx(4.60)
    _assert_same_outputs(src, loaded)


class _Tree(nn.Module):
    """A module tree holding a flat state dict under its dotted names (stand-in for OpenAI's JIT model)."""

    def __init__(self, flat: dict[str, torch.Tensor]) -> None:
        super().__init__()
        children: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in flat.items():
            head, _, tail = key.partition(".")
            if tail:
                children.setdefault(head, {})[tail] = value
            else:
                self.register_parameter(head, nn.Parameter(value.clone(), requires_grad=False))
        for name, sub in children.items():
            self.add_module(name, _Tree(sub))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace/save, only to build the fixture
def test_openai_torchscript_archive_is_read_without_jit(tmp_path: Path) -> None:
    src = _model(num_proxies=0)
    clip_keys = {k: v for k, v in src.state_dict().items() if "temporal_embedding" not in k}
    openai = hf_to_openai(clip_keys)
    openai = {k: v.half() if v.dim() > 1 else v for k, v in openai.items()}  # OpenAI ships fp16
    openai["input_resolution"] = torch.tensor(64)
    path = tmp_path / "ViT-tiny-jit.pt"
    torch.jit.save(torch.jit.trace(_Tree(openai), torch.zeros(1)), str(path))
    loaded = from_pretrained(path, num_proxies=0).eval()
    assert loaded.load_report.source == "openai" and loaded.load_report.ok
    ref = _model(num_proxies=0)
    ref.load_state_dict({k: (v.half().float() if v.dim() > 1 else v) for k, v in src.state_dict().items()})
    with torch.no_grad():
        ref.vision_model.embeddings.temporal_embedding.zero_()
        ref.logit_scale.fill_(4.6)
    _assert_same_outputs(ref, loaded)


@pytest.mark.parametrize("head", ["vip", "full", "meanpool", "seqtransf"])
def test_save_pretrained_round_trip(tmp_path: Path, head: str) -> None:
    src = _model(video_head=head, num_proxies=1)
    save_pretrained(src, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = from_pretrained(tmp_path).eval()
    assert loaded.config == src.config
    assert loaded.load_report.source == "clipvip-saved" and loaded.load_report.ok
    assert loaded.logit_scale.item() == pytest.approx(3.3)
    _assert_same_outputs(src, loaded)


def test_missing_and_unexpected_keys_are_reported(tmp_path: Path) -> None:
    src = _model()
    state = {"clipmodel." + k: v for k, v in src.state_dict().items()}
    del state["clipmodel.text_model.final_layer_norm.bias"]
    state["clipmodel.vision_model.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        from_pretrained(path)
    msg = str(err.value)
    assert "text_model.final_layer_norm.bias" in msg and "vision_model.extra.weight" in msg
    loaded = from_pretrained(path, strict=False)
    assert loaded.load_report.missing == ["text_model.final_layer_norm.bias"]
    assert loaded.load_report.unexpected == ["vision_model.extra.weight"]


def test_proxy_count_mismatch_is_reported(tmp_path: Path) -> None:
    src = _model(num_proxies=3)
    path = tmp_path / "vip.pt"
    torch.save({"clipmodel." + k: v for k, v in src.state_dict().items()}, path)
    with pytest.raises(ValueError, match="added_cls"):
        from_pretrained(path, num_proxies=4)
    loaded = from_pretrained(path, num_proxies=4, strict=False)
    assert any("added_cls" in m for m in loaded.load_report.mismatched)
    per_frame = from_pretrained(path, video_head="meanpool")  # proxies unused by a per-frame head
    assert any("added_cls" in n for n in per_frame.load_report.notes)


def test_untrusted_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": _Tree({"w": torch.zeros(1)})}, path)  # a pickled module object, not tensors
    with pytest.raises(ValueError, match="refusing to unpickle"):
        from_pretrained(path)


def test_missing_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        from_pretrained(tmp_path / "nope.pt")


def test_safetensors_state_dict_with_explicit_config(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = tiny_config(num_proxies=2)  # 4 heads at width 64: not CLIP's width // 64 rule
    src = CLIPViP(cfg).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = from_pretrained(path, config=cfg).eval()
    assert loaded.load_report.source == "state-dict" and loaded.load_report.ok
    _assert_same_outputs(src, loaded)
