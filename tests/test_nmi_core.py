"""Draw planning, k-means + NMI and the feature cache of the NMI analysis (no model needed)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from analysis.cache import FeatureCache, file_sha256
from analysis.clustering import KMeansConfig, kmeans_labels, nmi
from analysis.nmi import NmiConfig, TooFewTexts, main, measure_pair, plan_draws, prepare_source
from analysis.sources import SourceSpec
from synthetic import texts as synthetic


class HashEncoder:
    """Deterministic stand-in encoder: a unit vector from the text's hash; counts texts encoded."""

    id = "hash-test-v1"

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.stack(
            [
                np.random.default_rng(
                    int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
                ).normal(size=self.dim)
                for t in texts
            ]
        ).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_plan_draws_deterministic_without_replacement():
    cfg = NmiConfig(samples=50, repeats=4, seed=3)
    n, a = plan_draws(200, 80, cfg)
    _, b = plan_draws(200, 80, cfg)
    assert n == 50 and len(a) == 4
    for da, db in zip(a, b):
        assert np.array_equal(da.src_idx, db.src_idx) and np.array_equal(da.tgt_idx, db.tgt_idx)
        assert da.kmeans_seed == db.kmeans_seed
        assert len(set(da.src_idx.tolist())) == 50 and da.src_idx.max() < 200 and da.tgt_idx.max() < 80
    assert not np.array_equal(a[0].src_idx, a[1].src_idx)  # draws differ from each other
    _, c = plan_draws(200, 80, NmiConfig(samples=50, repeats=4, seed=4))
    assert not np.array_equal(a[0].src_idx, c[0].src_idx)


def test_plan_draws_too_few_and_allow_smaller():
    with pytest.raises(TooFewTexts, match="--allow-smaller"):
        plan_draws(30, 500, NmiConfig(samples=100))
    n, draws = plan_draws(30, 500, NmiConfig(samples=100, repeats=2, allow_smaller=True))
    assert n == 30  # both sides shrink to keep the 50/50 mix
    assert sorted(draws[0].src_idx.tolist()) == list(range(30)) and len(draws[0].tgt_idx) == 30


def _two_blobs(n: int, d: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(2, d))
    x = np.concatenate([centre[0] * sep + rng.normal(size=(n, d)), centre[1] * sep + rng.normal(size=(n, d))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat([0, 1], n)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_kmeans_nmi_separable_and_mixed(backend):
    cfg = KMeansConfig(backend=backend)
    x, y = _two_blobs(300, 32, sep=3.0, seed=0)
    assert nmi(y, kmeans_labels(x, seed=1, cfg=cfg)) == pytest.approx(1.0)
    # one distribution split in two halves at random: clusters carry no information about the half
    rng = np.random.default_rng(5)
    same = rng.normal(size=(600, 32)).astype(np.float32)
    same /= np.linalg.norm(same, axis=1, keepdims=True)
    assert nmi(y, kmeans_labels(same, seed=1, cfg=cfg)) < 0.02


def test_kmeans_deterministic_and_faiss_uses_every_point():
    # 2000 points: faiss would subsample to 512 by default; seeded runs must agree exactly
    x, y = _two_blobs(1000, 16, sep=0.6, seed=2)
    a, b = kmeans_labels(x, seed=7), kmeans_labels(x, seed=7)
    assert np.array_equal(a, b)
    # faiss spherical and sklearn Euclidean agree on unit vectors (up to label permutation)
    s = kmeans_labels(x, seed=7, cfg=KMeansConfig(backend="sklearn"))
    assert nmi(a, s) > 0.9
    with pytest.raises(ValueError, match="unknown k-means backend"):
        kmeans_labels(x, seed=0, cfg=KMeansConfig(backend="cuml"))


def test_nmi_values():
    y = np.array([0, 0, 1, 1])
    assert nmi(y, np.array([1, 1, 0, 0])) == pytest.approx(1.0)  # permutation invariant
    assert nmi(y, np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def test_feature_cache_encodes_each_text_once_and_persists(tmp_path):
    enc = HashEncoder()
    cache = FeatureCache(tmp_path, "f" * 64, enc.id)
    f1 = cache.features(["a", "b", "a", "c"], enc.encode)
    assert enc.calls == [3] and f1.shape == (4, 16) and np.array_equal(f1[0], f1[2])
    f2 = cache.features(["c", "d"], enc.encode)
    assert enc.calls == [3, 1] and np.array_equal(f2[0], f1[3])
    again = FeatureCache(tmp_path, "f" * 64, enc.id)  # a second run
    f3 = again.features(["d", "a", "b", "c"], enc.encode)
    assert enc.calls == [3, 1] and again.encoded_now == 0
    assert np.array_equal(f3, enc.encode(["d", "a", "b", "c"]))
    # another encoder id or file hash is another cache entry
    FeatureCache(tmp_path, "f" * 64, "other-encoder").features(["a"], enc.encode)
    FeatureCache(tmp_path, "e" * 64, enc.id).features(["a"], enc.encode)
    assert enc.calls[-2:] == [1, 1]


def test_feature_cache_inconsistent_files_rebuilt(tmp_path):
    enc = HashEncoder()
    cache = FeatureCache(tmp_path, "a" * 64, enc.id)
    cache.features(["x", "y"], enc.encode)
    assert cache.index is not None
    cache.index.write_text(json.dumps(["x"]))  # index and features disagree
    fresh = FeatureCache(tmp_path, "a" * 64, enc.id)
    assert fresh.texts == []
    fresh.features(["x", "y"], enc.encode)
    assert fresh.encoded_now == 2
    wrong_dim = HashEncoder(dim=8)
    wrong_dim.id = enc.id
    with pytest.raises(ValueError, match="stale cache"):
        FeatureCache(tmp_path, "a" * 64, enc.id).features(["z"], wrong_dim.encode)


def test_file_hash_memo_follows_changes(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("one\n")
    h1 = file_sha256(p, tmp_path / "cache")
    assert h1 == hashlib.sha256(b"one\n").hexdigest()
    assert json.loads((tmp_path / "cache" / "file_hashes.json").read_text())[str(p.resolve())]["sha256"] == h1
    p.write_text("two, longer\n")
    assert file_sha256(p, tmp_path / "cache") == hashlib.sha256(b"two, longer\n").hexdigest()


def test_measure_pair_encodes_union_once_and_is_deterministic(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(f"alpha text {i}" for i in range(120)))
    (tmp_path / "b.txt").write_text("\n".join(f"beta text {i}" for i in range(90)))
    enc = HashEncoder()
    cfg = NmiConfig(samples=40, repeats=3, seed=1)

    def run():
        a = prepare_source(SourceSpec("a", "text_lines", tmp_path / "a.txt"), enc.id, tmp_path / "cache")
        b = prepare_source(SourceSpec("b", "text_lines", tmp_path / "b.txt"), enc.id, tmp_path / "cache")
        return measure_pair(a, b, enc, "hash", cfg)

    r1 = run()
    n_src_used = len(np.unique(np.concatenate([d.src_idx for d in plan_draws(120, 90, cfg)[1]])))
    assert enc.calls[0] == n_src_used and len(enc.calls) == 2  # one batch per side, union of all draws
    r2 = run()
    assert len(enc.calls) == 2  # second run: everything from the disk cache
    assert r1.nmi_runs == r2.nmi_runs and len(r1.nmi_runs) == 3
    # hash features are random directions: the two sides are indistinguishable
    assert r1.nmi_mean < 0.1
    assert r1.nmi_std == pytest.approx(float(np.std(r1.nmi_runs, ddof=1)))
    assert r1.draw0 is not None and r1.draw0.feats.shape == (80, 16)


def test_all_records_absent_and_broken_sources_and_goes_on(tmp_path, capsys):
    """--all with a stand-in encoder: an absent CC12M falls back to CC3M, a broken WebVid file is an
    error of that source only, an absent COCO is skipped with a note; the other pairs are measured."""
    toml = synthetic.write_sources(tmp_path, n=60)
    (tmp_path / "cc3m.tsv").write_text((tmp_path / "cc12m.tsv").read_text())
    (tmp_path / "webvid.csv").write_text("this is not the webvid header\nrow\n")
    reg = (
        toml.read_text().replace('"cc12m.tsv"', '"absent.tsv"').replace('"captions_coco.json"', '"gone.json"')
    )
    toml.write_text(reg + '[sources.cc3m]\nformat = "cc_tsv"\npath = "cc3m.tsv"\n')
    out = tmp_path / "t.json"
    rc = main(
        [
            "--all",
            "--sources",
            str(toml),
            "--samples",
            "20",
            "--repeats",
            "2",
            "--no-cache",
            "--out",
            str(out),
            "--no-progress",
            "-q",
        ],
        encoder_factory=lambda *a: HashEncoder(),
    )
    assert rc == 1
    table = json.loads(out.read_text())
    assert {(r["src"], r["tgt"]) for r in table["results"]} == {
        (s, t) for s in ("hdvila_sub", "hdvila_cap", "cc3m") for t in ("msrvtt", "didemo")
    }
    assert [d["source"] for d in table["skipped"]] == ["coco"]
    assert table["errors"][0]["source"] == "webvid" and "'name'" in table["errors"][0]["error"]
    printed = capsys.readouterr().out
    assert "CC3M" in printed and "webvid: error" in printed and "coco: skipped" in printed
    assert (tmp_path / "t.csv").read_text().count("\n") == 1 + 6 + 1
    assert (tmp_path / "t.png").is_file()


def test_all_with_no_data_fails_clearly(tmp_path, capsys):
    toml = tmp_path / "s.toml"
    toml.write_text('[sources.msrvtt]\nformat = "msrvtt_csv"\npath = "nowhere.csv"\n')
    rc = main(
        ["--all", "--sources", str(toml), "--no-cache", "--out", str(tmp_path / "t.json"), "-q"],
        encoder_factory=lambda *a: HashEncoder(),
    )
    captured = capsys.readouterr()
    assert rc == 1 and "no pair could be measured" in captured.err
    assert "hdvila_sub: skipped (not in the sources registry)" in captured.out
    assert not (tmp_path / "t.json").exists()
