"""The `clip` encoder of the NMI analysis: the paper's text protocol, checked against transformers'
CLIPModel through the analysis path, OpenAI-format weights, clear errors, and the CLI as a script."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_hf_clip import random_hf_clip
from transformers import CLIPModel, CLIPTokenizer

from analysis.encoders import (
    CLIP_CONTEXT_LENGTH,
    ClipTextEncoder,
    EncodeOptions,
    EncoderError,
    load_clip_encoder,
    load_encoder,
)
from synthetic import texts as synthetic
from trainer.model.tokenizer import build_tiny_tokenizer, load_clip_tokenizer
from trainer.model.weights import hf_to_openai

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5
LONG = " ".join(["a very long subtitle that keeps going and going"] * 20)  # far beyond 77 tokens
TEXTS = [
    "a man is talking about cars",
    "um so yeah don't forget to subscribe",
    LONG,
    "Café — naïve déjà vu!",
    "x",
]


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory) -> tuple[Path, CLIPModel]:
    """A tiny random HF CLIPModel saved as a real HF directory, with a tiny BPE in CLIP's file format."""
    path = tmp_path_factory.mktemp("hf_clip")
    build_tiny_tokenizer(
        synthetic.generate("msrvtt", 200) + synthetic.generate("hdvila_sub", 200), path, num_merges=200
    )
    vocab = len(json.loads((path / "vocab.json").read_text()))
    # 2 heads of 64 so the OpenAI-format loader (heads = width // 64) infers the same architecture
    model = random_hf_clip(
        text=dict(
            vocab_size=vocab,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=CLIP_CONTEXT_LENGTH,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
        ),
        vision=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=1,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=32,
        seed=0,
    )
    model.save_pretrained(path)
    return path, model


def reference_features(path: Path, model: CLIPModel, texts: list[str]) -> np.ndarray:
    """transformers' own pipeline: CLIPTokenizer (77, truncation), get_text_features, L2 normalise."""
    tok = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    enc = tok(
        texts, padding="max_length", truncation=True, max_length=CLIP_CONTEXT_LENGTH, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    feats = getattr(out, "pooler_output", out)
    return torch.nn.functional.normalize(feats, dim=-1).numpy()


def test_clip_protocol_matches_transformers(hf_clip_dir):
    path, model = hf_clip_dir
    enc = load_encoder("clip", path)
    ours = enc.encode(TEXTS)
    assert ours.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(ours, reference_features(path, model, TEXTS), atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # truncation at 77 with EOT last, the EOT feature pooled: the long text equals its own first 77 tokens
    tok = load_clip_tokenizer(path)
    ids, _ = tok([LONG], max_length=CLIP_CONTEXT_LENGTH)
    assert ids.shape == (1, 77) and int(ids[0, -1]) == tok.eot_id
    longer = enc.encode([LONG + " and some more words at the end"])
    np.testing.assert_allclose(longer[0], ours[2], atol=TOL)


def test_clip_loads_only_the_text_tower_and_batching_is_exact(hf_clip_dir):
    """Only the text tower and projection are built; every batch split gives the same features as
    transformers' 77-padded batch (a causal tower pooled at the EOT never sees the pads after it)."""
    path, model = hf_clip_dir
    enc = load_clip_encoder(path, path, "0" * 64, EncodeOptions(batch_size=2, progress=False))
    assert isinstance(enc, ClipTextEncoder)
    ours = sum(p.numel() for p in enc.tower.parameters()) + enc.projection.weight.numel()
    text_only = sum(p.numel() for p in model.text_model.parameters()) + model.text_projection.weight.numel()
    assert ours == text_only < sum(p.numel() for p in model.parameters())
    texts = TEXTS + ["a man is talking about dogs", "x y"]  # batches of 2 in token-count order
    np.testing.assert_allclose(enc.encode(texts), reference_features(path, model, texts), atol=TOL)
    lengths = sorted(len(t) for t in enc.token_ids(texts))
    assert lengths[-1] == CLIP_CONTEXT_LENGTH and lengths[0] < 10  # BOS + tokens + EOT, no padding


def test_clip_text_weights_missing_refused(hf_clip_dir, tmp_path):
    path, _ = hf_clip_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copy(path / name, broken / name)
    sd = load_file(path / "model.safetensors")
    del sd["text_model.final_layer_norm.weight"]
    save_file(sd, broken / "model.safetensors")
    with pytest.raises(EncoderError, match="final_layer_norm.weight"):
        load_encoder("clip", broken).encode(["a text"])


def test_clip_openai_pt_with_tokenizer_dir(hf_clip_dir, tmp_path):
    path, model = hf_clip_dir
    sd = hf_to_openai(model.state_dict())
    pt = tmp_path / "ViT-tiny.pt"
    torch.save(sd, pt)
    with pytest.raises(EncoderError, match="--clip-tokenizer"):
        load_encoder("clip", pt)  # no vocab.json/merges.txt next to the .pt
    enc = load_encoder("clip", pt, clip_tokenizer=path)
    np.testing.assert_allclose(enc.encode(TEXTS[:3]), reference_features(path, model, TEXTS[:3]), atol=TOL)


def test_clip_missing_files_named(hf_clip_dir, tmp_path):
    with pytest.raises(EncoderError, match=r"--clip-weights.*config.json \+ model.safetensors \+ vocab.json"):
        load_encoder("clip", None)
    path, _ = hf_clip_dir
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.json"):
        shutil.copy(path / name, partial / name)
    with pytest.raises(EncoderError, match="merges.txt"):
        load_encoder("clip", partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(EncoderError, match="model.safetensors"):
        load_encoder("clip", partial, clip_tokenizer=path)


def test_cli_as_script_and_module(hf_clip_dir, tmp_path, monkeypatch, capsys):
    """`python analysis/nmi.py` (a script, in a subprocess) and `python -m analysis.nmi` (runpy): same JSON."""
    path, _ = hf_clip_dir
    toml = synthetic.write_sources(tmp_path / "src", n=120)
    common = [
        "--src",
        "hdvila_sub",
        "--tgt",
        "didemo",
        "--sources",
        str(toml),
        "--encoder",
        "clip",
        "--clip-weights",
        str(path),
        "--samples",
        "50",
        "--repeats",
        "2",
        "--seed",
        "3",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "analysis/nmi.py",
            *common,
            "--out",
            str(tmp_path / "script.json"),
            "--plot",
            str(tmp_path / "p.png"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NMI hdvila_sub vs didemo" in done.stdout and "runs:" in done.stdout
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    script = json.loads((tmp_path / "script.json").read_text())

    # as `python -m analysis.nmi` would: a fresh __main__, not the copy other tests imported
    monkeypatch.delitem(sys.modules, "analysis.nmi", raising=False)
    monkeypatch.setattr(sys, "argv", ["nmi", *common, "--no-cache", "--out", str(tmp_path / "module.json")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("analysis.nmi", run_name="__main__")
    assert exit_info.value.code == 0
    module = json.loads((tmp_path / "module.json").read_text())
    assert module["nmi_runs"] == script["nmi_runs"] and module["encoder_id"] == script["encoder_id"]
    assert script["encoder_id"].startswith("clip-") and script["seed"] == 3 and len(script["nmi_runs"]) == 2

    monkeypatch.setattr(
        sys, "argv", ["nmi", "--src", "x", "--tgt", "y", "--sources", str(toml), "--encoder", "clip"]
    )
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("analysis.nmi", run_name="__main__")
    assert exit_info.value.code == 2 and "--clip-weights" in capsys.readouterr().err
