"""The NMI measure with the real all-MiniLM-L6-v2 (offline, from the pinned PyPI package), and its CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from analysis import encoders
from analysis.encoders import (
    MINILM_MAX_LENGTH,
    MINILM_SHA256,
    EncodeOptions,
    EncoderError,
    LazyEncoder,
    MiniLMEncoder,
    batched_encode,
    load_encoder,
)
from analysis.nmi import main
from analysis.packed_bert import length_runs
from synthetic import texts as synthetic

CONTRACT_KEYS = {"src", "tgt", "encoder", "samples", "repeats", "seed", "nmi_mean", "nmi_std", "nmi_runs"}


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return synthetic.write_sources(tmp_path_factory.mktemp("nmi_sources"), n=200, seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Shared by the CLI tests below: they use the same draws, so features are encoded once."""
    return tmp_path_factory.mktemp("nmi_cache")


SIZES = ["--samples", "80", "--repeats", "3"]


def minilm_args(sources, cache_dir, sizes=SIZES) -> list[str]:
    """The CLI arguments every run here shares: registry, MiniLM, sizes, cache, quiet."""
    return [
        "--sources",
        str(sources),
        "--encoder",
        "minilm",
        *sizes,
        "--cache-dir",
        str(cache_dir),
        "--no-progress",
        "-q",
    ]


def shared_factory(encoder, made: list):
    """encoder_factory for main(): the real load_encoder checks, but the loaded model is shared across tests."""

    def factory(name, clip_weights, clip_tokenizer, opts, cache_root):
        real = load_encoder(name, clip_weights, clip_tokenizer, opts, cache_root)
        lazy = LazyEncoder(real.id, lambda: encoder)
        made.append(lazy)
        return lazy

    return factory


def test_minilm_features_are_unit_and_semantic(minilm):
    x = minilm.encode(
        ["a man is cooking pasta", "a person prepares noodles in a kitchen", "stock prices fell"]
    )
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert x[0] @ x[1] > 0.5 > 0.2 > x[0] @ x[2]
    # order-independent batching: encoding one text alone gives the same row (tolerance 1e-5)
    np.testing.assert_allclose(minilm.encode(["stock prices fell"])[0], x[2], atol=1e-5)


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(encoders.minilm_model_dir()), device="cpu", local_files_only=True)
    texts = ["a dog runs along the beach", "um so yeah today we're going to talk about it", "x"]
    ref = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(minilm.encode(texts), ref, atol=1e-5)


def test_packed_forward_equals_padded_transformers(minilm):
    """The padding-free forward pass against transformers' BertModel on one padded, unsorted batch
    (masked mean pooling, as sentence-transformers pools): equal within 1e-5, truncation included."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(encoders.minilm_model_dir()), use_safetensors=True).eval()
    texts = [
        "a cat",
        " ".join(["a very long subtitle line that goes on"] * 60),  # beyond 256 tokens: truncated
        "people are dancing at a wedding party",
        "a dog",
        "the chef slices onions and garlic",
    ]
    enc = minilm.tokenizer(
        texts, padding=True, truncation=True, max_length=MINILM_MAX_LENGTH, return_tensors="pt"
    )
    assert enc["input_ids"].shape[1] == MINILM_MAX_LENGTH
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    with torch.inference_mode():
        packed = minilm.bert.mean_pool(minilm.token_ids(texts)).numpy()  # as given: runs of length 1
    np.testing.assert_allclose(packed, ref, atol=1e-5)
    np.testing.assert_allclose(minilm.encode(texts), ref, atol=1e-5)  # sorted, equal lengths share a run


def test_units_of_work_are_sorted_by_token_count_and_rows_restored():
    """batched_encode hands each batch over in token-count order and puts rows back in input order."""
    ids = [[1] * n for n in (5, 2, 9, 2, 7, 1, 5)]
    seen: list[list[int]] = []

    def encode_batch(batch: list[list[int]]) -> torch.Tensor:
        seen.append([len(t) for t in batch])
        return torch.tensor([[float(len(t)), 0.0] for t in batch])

    out = batched_encode(ids, encode_batch, EncodeOptions(batch_size=3, progress=False), "test")
    assert seen == [[1, 2, 2], [5, 5, 7], [9]]
    assert out[:, 0].tolist() == [5, 2, 9, 2, 7, 1, 5] and out.dtype == np.float32
    assert length_runs([3, 3, 5, 3]) == [(2, 3), (1, 5), (1, 3)] and length_runs([]) == []


def test_packed_forward_refuses_bad_lengths(minilm):
    with pytest.raises(ValueError, match="1..512 tokens"):
        minilm.bert.mean_pool([[101, 102], []])
    with pytest.raises(ValueError, match="1..512 tokens"):
        minilm.bert.mean_pool([[101] * 513])


def test_minilm_tampered_weights_refused(tmp_path, monkeypatch):
    src = encoders.minilm_model_dir()
    fake = tmp_path / "model"
    fake.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, fake / f.name)
    (fake / "model.safetensors").write_bytes(b"\x00" * 1024)
    monkeypatch.setattr(encoders, "minilm_model_dir", lambda: fake)
    with pytest.raises(EncoderError, match=f"does not match the pinned {MINILM_SHA256}"):
        load_encoder("minilm")
    with pytest.raises(EncoderError, match="refusing"):
        MiniLMEncoder()
    (fake / "model.safetensors").unlink()
    with pytest.raises(EncoderError, match="missing"):
        load_encoder("minilm")


def test_minilm_version_pinned(monkeypatch):
    monkeypatch.setattr(encoders.importlib.metadata, "version", lambda dist: "0.2.0")
    with pytest.raises(EncoderError, match="only the pinned 0.1.0"):
        encoders.minilm_model_dir()


def test_different_sources_high_nmi_same_source_low(minilm, sources, cache_dir, tmp_path, capsys):
    made: list = []
    args = minilm_args(sources, cache_dir)
    out = tmp_path / "gap.json"
    assert (
        main(
            ["--src", "hdvila_sub", "--tgt", "msrvtt", "--out", str(out)] + args,
            encoder_factory=shared_factory(minilm, made),
        )
        == 0
    )
    gap = json.loads(out.read_text())
    assert CONTRACT_KEYS <= set(gap)
    assert gap["encoder"] == "minilm" and gap["samples"] == 80 and gap["repeats"] == 3 and gap["seed"] == 0
    assert len(gap["nmi_runs"]) == 3 and gap["nmi_mean"] == pytest.approx(np.mean(gap["nmi_runs"]))
    assert gap["nmi_mean"] > 0.9  # ASR chatter vs descriptive queries: separated
    assert "hdvila_sub vs msrvtt" in capsys.readouterr().out

    # same source against itself: two independent draws of one distribution
    same = tmp_path / "same.json"
    assert (
        main(
            ["--src", "msrvtt", "--tgt", "msrvtt", "--out", str(same)] + args,
            encoder_factory=shared_factory(minilm, made),
        )
        == 0
    )
    assert json.loads(same.read_text())["nmi_mean"] < 0.05

    # second run of the first pair: all features from the cache, the model is never loaded
    made.clear()
    assert (
        main(
            ["--src", "hdvila_sub", "--tgt", "msrvtt", "--out", str(out)] + args,
            encoder_factory=shared_factory(minilm, made),
        )
        == 0
    )
    assert made[0].loads == 0
    assert json.loads(out.read_text())["nmi_runs"] == gap["nmi_runs"]

    # scikit-learn k-means as the cross-check on the same (cached) features
    cross = tmp_path / "sk.json"
    assert (
        main(
            ["--src", "hdvila_sub", "--tgt", "msrvtt", "--kmeans", "sklearn", "--out", str(cross)] + args,
            encoder_factory=shared_factory(minilm, made),
        )
        == 0
    )
    sk = json.loads(cross.read_text())
    assert sk["kmeans"].startswith("sklearn") and sk["nmi_mean"] > 0.9


def test_all_table_json_csv_plot_and_skips(minilm, sources, cache_dir, tmp_path, capsys):
    # drop CC12M (no CC3M either) to exercise skip-with-note; shrink one source below --samples
    reg = sources.read_text().replace('path = "cc12m.tsv"', 'path = "absent.tsv"')
    small = sources.parent / "few.txt"
    small.write_text("only\nthree\ntexts\n")
    reg += f'[sources.tiny]\nformat = "text_lines"\npath = "{small}"\n'
    toml = sources.parent / "all.toml"
    toml.write_text(reg)
    out = tmp_path / "res" / "table.json"
    rc = main(
        ["--all", "--out", str(out), *minilm_args(toml, cache_dir)],
        encoder_factory=shared_factory(minilm, []),
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "HD-VILA_sub" in printed and "MSR-VTT" in printed and "DiDeMo" in printed
    assert "cc12m: skipped" in printed
    table = json.loads(out.read_text())
    pairs = {(r["src"], r["tgt"]) for r in table["results"]}
    assert pairs == {
        (s, t) for s in ("hdvila_sub", "hdvila_cap", "webvid", "coco") for t in ("msrvtt", "didemo")
    }
    assert table["skipped"] == [
        {"source": "cc12m", "reason": f"file {sources.parent / 'absent.tsv'} is absent"}
    ]
    for r in table["results"]:
        assert CONTRACT_KEYS <= set(r) and 0.0 <= r["nmi_mean"] <= 1.0
    assert table["sources"]["msrvtt"]["texts"] == 200
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(rows) == 8 and float(rows[0]["nmi_mean"]) == pytest.approx(table["results"][0]["nmi_mean"])
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # a pair whose source is too small is recorded as an error, the others still run
    rc = main(
        [
            "--src",
            "tiny,coco",
            "--tgt",
            "msrvtt",
            "--out",
            str(tmp_path / "t2.json"),
            *minilm_args(toml, cache_dir),
        ],
        encoder_factory=shared_factory(minilm, []),
    )
    assert rc == 1
    t2 = json.loads((tmp_path / "t2.json").read_text())
    assert [r["src"] for r in t2["results"]] == ["coco"]
    assert t2["errors"][0]["src"] == "tiny" and "--allow-smaller" in t2["errors"][0]["error"]


def test_allow_smaller_through_cli(minilm, sources, cache_dir, tmp_path):
    small = tmp_path / "few.txt"
    small.write_text("\n".join(f"a cat sleeps on sofa number {i}" for i in range(40)) + "\n\n   \n")
    toml = tmp_path / "s.toml"
    toml.write_text(
        sources.read_text().replace('path = "', f'path = "{sources.parent}/')
        + f'[sources.few]\nformat = "text_lines"\npath = "{small}"\n'
    )
    base = [
        "--src",
        "few",
        "--tgt",
        "msrvtt",
        *minilm_args(toml, cache_dir, ["--samples", "100", "--repeats", "2"]),
    ]
    assert main(base, encoder_factory=shared_factory(minilm, [])) == 2  # too few: refused
    out = tmp_path / "o.json"
    assert (
        main(base + ["--allow-smaller", "--out", str(out)], encoder_factory=shared_factory(minilm, [])) == 0
    )
    res = json.loads(out.read_text())
    assert res["samples"] == 40 and res["samples_requested"] == 100
    assert res["sources"]["few"]["empty_skipped"] == 2
