"""Safe checkpoint loading: allow-listed unpickling, strict keys, cfg/weights cross-checks, dtype casts."""

from __future__ import annotations

import argparse
import copy
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ofa_fixtures import CKPT

from captioner.ofa import OFA, CheckpointConfigError
from captioner.ofa.checkpoint import UnsafeCheckpointError, read_checkpoint


@pytest.fixture(scope="module")
def ckpt() -> dict:
    return read_checkpoint(CKPT)


@pytest.fixture(scope="module")
def reference(ckpt: dict) -> OFA:
    return OFA.from_checkpoint(CKPT)


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _variant(ckpt: dict, tmp_path: Path, name: str = "variant.pt", **changes: object) -> tuple[dict, Path]:
    new = dict(ckpt)
    new["model"] = dict(ckpt["model"])
    new["cfg"] = dict(ckpt["cfg"])
    new["cfg"]["model"] = copy.copy(ckpt["cfg"]["model"])
    for k, v in changes.items():
        setattr(new["cfg"]["model"], k, v)
    return new, tmp_path / name


class _RunsCode:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_fixture_checkpoint_loads_with_its_config(ckpt: dict, reference: OFA) -> None:
    assert isinstance(ckpt["cfg"]["model"], argparse.Namespace)
    c = reference.cfg
    assert (c.embed_dim, c.heads, c.ffn_dim, c.encoder_layers, c.decoder_layers) == (32, 4, 64, 2, 2)
    assert (c.resnet_type, c.token_bucket_size, c.image_bucket_size, c.patch_image_size) == (
        "resnet18",
        16,
        8,
        96,
    )
    assert c.vocab_size == 317
    sd = reference.state_dict()
    assert list(sd) == list(ckpt["model"]), "the official key names and order load without renaming"
    for k, v in ckpt["model"].items():
        assert torch.equal(sd[k], v), k
    # tied: one tensor for both embeddings and the output projection
    assert reference.decoder.output_projection.weight is reference.encoder.embed_tokens.weight
    assert reference.decoder.embed_tokens is reference.encoder.embed_tokens


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_refuses_pickle_that_runs_code(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save(
        {"model": {"w": torch.ones(1)}, "cfg": {"model": _RunsCode(marker)}},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|os\.system|nt\.system"):
        OFA.from_checkpoint(path)
    assert not marker.exists()


def test_refuses_unlisted_class_and_names_it(tmp_path: Path, ckpt: dict) -> None:
    new, path = _variant(ckpt, tmp_path)
    new["cfg"]["extra"] = zipfile.ZipInfo("x")  # harmless but not allow-listed
    _save(new, path)
    with pytest.raises(UnsafeCheckpointError, match=r"zipfile\.ZipInfo"):
        read_checkpoint(path)


def test_numpy_scalars_in_cfg_are_allowed_including_numpy1_names(tmp_path: Path, ckpt: dict) -> None:
    new, path = _variant(ckpt, tmp_path, lr=np.float64(1e-5), warmup_ratio=np.float32(0.06))
    new["cfg"]["extra"] = {"dtype": np.dtype("float32")}
    buf = io.BytesIO()
    torch.save(new, buf)
    # Rewrite the pickle the way numpy 1.x names the scalar reconstructor (numpy.core.multiarray.scalar).
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data or b"numpy.core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(info.filename, data)
    loaded = read_checkpoint(path)
    assert loaded["cfg"]["model"].lr == pytest.approx(1e-5)
    OFA.from_checkpoint(path)


def test_fp16_weights_are_cast_to_the_requested_dtype(tmp_path: Path, ckpt: dict, reference: OFA) -> None:
    new, path = _variant(ckpt, tmp_path)
    new["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    _save(new, path)
    m32 = OFA.from_checkpoint(path, dtype=torch.float32)
    for (k, p), (_, q) in zip(m32.named_parameters(), reference.named_parameters()):
        assert p.dtype == torch.float32
        assert torch.equal(p, q.half().float()), k
    mbf = OFA.from_checkpoint(CKPT, dtype=torch.bfloat16)
    assert {p.dtype for p in mbf.parameters()} == {torch.bfloat16}


def test_missing_buffers_are_recomputed(tmp_path: Path, ckpt: dict, reference: OFA) -> None:
    new, path = _variant(ckpt, tmp_path)
    for k in list(new["model"]):
        if k.endswith(("rp_bucket", "version", "image_position_idx", "output_projection.weight")):
            del new["model"][k]
    _save(new, path)
    m = OFA.from_checkpoint(path)
    for (k, a), b in zip(m.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), k


def test_tampered_bucket_buffer_is_an_error(tmp_path: Path, ckpt: dict) -> None:
    new, path = _variant(ckpt, tmp_path)
    bad = new["model"]["encoder.token_rp_bucket"].clone()
    bad[0, 5] += 1
    new["model"]["encoder.token_rp_bucket"] = bad
    _save(new, path)
    with pytest.raises(CheckpointConfigError, match="token_rp_bucket"):
        OFA.from_checkpoint(path)


def test_missing_and_unexpected_keys_are_errors(tmp_path: Path, ckpt: dict) -> None:
    new, path = _variant(ckpt, tmp_path)
    del new["model"]["encoder.layers.1.fc2.weight"]
    _save(new, path)
    with pytest.raises(CheckpointConfigError, match=r"missing \['encoder\.layers\.1\.fc2\.weight'\]"):
        OFA.from_checkpoint(path)
    new, path = _variant(ckpt, tmp_path, "extra.pt")
    new["model"]["encoder.layers.0.w_resid"] = torch.ones(32)
    _save(new, path)
    with pytest.raises(CheckpointConfigError, match="w_resid"):
        OFA.from_checkpoint(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder_attention_heads": 8, "decoder_attention_heads": 8}, "rel_pos_table"),
        ({"encoder_layers": 3}, "encoder_layers"),
        ({"resnet_type": "resnet101"}, "layer3"),
        ({"token_bucket_size": 32}, "token_rel_pos_table"),
        ({"scale_attn": False}, "scale_attn"),
        ({"disable_entangle": False}, "disable_entangle"),
        ({"resnet_type": "resnet34"}, "resnet_type"),
    ],
)
def test_cfg_and_weights_must_agree(tmp_path: Path, ckpt: dict, changes: dict, message: str) -> None:
    new, path = _variant(ckpt, tmp_path, **changes)
    _save(new, path)
    with pytest.raises(CheckpointConfigError, match=message):
        OFA.from_checkpoint(path)


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        OFA.from_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "junk.pt.xz").write_bytes(b"not xz")
    with pytest.raises(ValueError, match="xz"):
        OFA.from_checkpoint(tmp_path / "junk.pt.xz")
    _save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'model' entry"):
        OFA.from_checkpoint(tmp_path / "other.pt")
