"""The gap report's statistics (bootstrap CI, k sweep, MMD) and what the NMI report shows: n per side,
one warning row, faiss kept quiet, readable bars for many sources, one colour meaning, untrained label."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_nmi_core import HashEncoder

from analysis.clustering import KMeansConfig, kmeans_labels
from analysis.gap import (
    bootstrap_ci,
    median_bandwidth,
    mmd2,
    mmd_permutation_p,
    untrained_ids,
)
from analysis.nmi import NmiConfig, main, measure_pair, prepare_source
from analysis.plots import Bar, DrawView, nmi_figure
from analysis.report import TableRun, n_label, smaller_warning
from analysis.sources import SourceSpec
from pipeline.shard_format import CAPTIONS_SCHEMA


def _mmd2_loops(x: np.ndarray, y: np.ndarray, s: float) -> float:
    """The unbiased MMD² estimator written out term by term (Gretton et al. 2012, eq. 3)."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * s * s)))

    x, y = x.astype(np.float64), y.astype(np.float64)
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def _unit(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, d))
    x[:, 0] += shift
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_mmd2_matches_the_written_out_estimator_and_detects_a_shift():
    rng = np.random.default_rng(0)
    x, y = _unit(rng, 7, 5), _unit(rng, 9, 5, shift=1.0)
    s = median_bandwidth(y)
    d = [np.linalg.norm(a - b) for a, b in itertools.combinations(y.astype(np.float64), 2)]
    assert s == pytest.approx(float(np.median(d)), rel=1e-6)
    assert mmd2(x, y, s) == pytest.approx(_mmd2_loops(x, y, s), abs=1e-9)
    same_a, same_b = _unit(rng, 300, 16), _unit(rng, 300, 16)
    far = _unit(rng, 300, 16, shift=2.0)
    s = median_bandwidth(same_b)
    assert abs(mmd2(same_a, same_b, s)) < 0.01 < mmd2(far, same_b, s)  # unbiased: ~0 for one distribution
    assert mmd_permutation_p(far[:60], same_b[:60], s, permutations=99) == pytest.approx(0.01)
    assert mmd_permutation_p(same_a[:60], same_b[:60], s, permutations=99) > 0.05


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    v = [0.50, 0.52, 0.47, 0.55, 0.49, 0.51, 0.53, 0.48, 0.50, 0.54]
    ci = bootstrap_ci(v, 0.95, 4000, seed=1)
    assert ci is not None and ci.lo < np.mean(v) < ci.hi and ci.hi - ci.lo < max(v) - min(v)
    assert bootstrap_ci(v, 0.95, 4000, seed=1) == ci
    wider = bootstrap_ci(v, 0.99, 4000, seed=1)
    assert wider is not None and wider.lo <= ci.lo and wider.hi >= ci.hi
    assert bootstrap_ci([0.5]) is None  # one draw says nothing about the spread


def test_untrained_ids():
    ids = ["ofa-tiny-random(untrained,seed=0)", "blip-tiny-random", "noop", "ofa(large)", "minilm-x", ""]
    assert untrained_ids(ids) == ["blip-tiny-random", "noop", "ofa-tiny-random(untrained,seed=0)"]


def _prepared(tmp_path, name: str, texts: list[str]):
    p = tmp_path / f"{name}.txt"
    p.write_text("\n".join(texts) + "\n")
    return prepare_source(SourceSpec(name, "text_lines", p), HashEncoder.id, None)


def test_measure_pair_k_sweep_mmd_and_small_warning(tmp_path):
    src = _prepared(tmp_path, "a", [f"subtitle line {i}" for i in range(30)])
    tgt = _prepared(tmp_path, "b", [f"query {i}" for i in range(200)])
    cfg = NmiConfig(samples=50, repeats=4, seed=2, allow_smaller=True, k_sweep=(2, 3, 8), mmd_permutations=20)
    r = measure_pair(src, tgt, HashEncoder(), "hash", cfg)
    assert r.samples == 30 and r.samples_requested == 50
    assert [s["k"] for s in r.k_sweep] == [2, 3, 8]
    assert r.k_sweep[0]["nmi_runs"] == r.nmi_runs and len(r.k_sweep[2]["nmi_runs"]) == 4
    assert r.nmi_ci is not None and r.nmi_ci[0] <= r.nmi_mean <= r.nmi_ci[1]
    assert len(r.mmd2_runs) == 4 and r.mmd2_ci is not None and r.mmd_p is not None and r.mmd_bandwidth > 0
    assert "fewer than --samples 50" in r.warning and "all of the smaller side" in r.warning
    again = measure_pair(src, tgt, HashEncoder(), "hash", cfg)
    assert again.to_json() == r.to_json()  # seeded end to end


def test_faiss_small_sample_warning_is_silenced(capfd):
    x = _unit(np.random.default_rng(3), 20, 8)
    kmeans_labels(x, seed=1, cfg=KMeansConfig(k=4))
    assert "WARNING" not in capfd.readouterr().err


def _bars(n_src: int, tgts: tuple[str, ...]) -> list[Bar]:
    return [
        Bar(
            f"source_number_{i:02d}", t, 0.1 + 0.05 * i, 0.01, n=19 + i, ci=[0.05 + 0.05 * i, 0.15 + 0.05 * i]
        )
        for t in tgts
        for i in range(n_src)
    ]


def test_bars_stay_readable_for_many_sources_and_colour_means_downstream():
    rng = np.random.default_rng(0)
    feats = _unit(rng, 40, 8)
    draws = [
        DrawView("src_a", t, feats, np.repeat([0, 1], 20), rng.integers(0, 2, 40), 0.5)
        for t in ("msrvtt", "didemo")
    ]
    fig = nmi_figure(draws, _bars(16, ("msrvtt", "didemo")), "t")
    fig.canvas.draw()
    bar_ax = fig.axes[-1]
    boxes = [t.get_window_extent() for t in bar_ax.get_yticklabels()]
    assert len(boxes) == 16
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    # one colour meaning: a downstream set's points and its bars share one colour; the source is grey
    from matplotlib.container import BarContainer

    bars = [c for c in bar_ax.containers if isinstance(c, BarContainer)]
    bar_colours = {c.get_label(): c.patches[0].get_facecolor() for c in bars}
    assert set(bar_colours) == {"msrvtt", "didemo"} and bar_colours["msrvtt"] != bar_colours["didemo"]
    for ax, d in zip(fig.axes[:2], draws):
        tgt_colours = {tuple(c.get_facecolor()[0]) for c in ax.collections[2:] if len(c.get_offsets())}
        src_colours = {tuple(c.get_facecolor()[0][:3]) for c in ax.collections[:2] if len(c.get_offsets())}
        assert tgt_colours and all(col[:3] == bar_colours[d.tgt][:3] for col in tgt_colours)
        assert src_colours == {(0.25, 0.25, 0.25)}
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_n_label_and_warning_row_say_what_ran():
    class R:
        def __init__(self, src: str, n: int) -> None:
            self.src, self.tgt, self.samples, self.samples_requested, self.repeats = src, "t", n, 1000, 10
            self.src_texts, self.tgt_texts = n, 5000

    same = [R("a", 1000), R("b", 1000)]
    assert n_label(same) == "n=1000/side x 10 draws" and smaller_warning(same) == ""
    mixed = [R("a", 19), R("b", 1000), R("c", 451)]
    assert n_label(mixed) == "n=19..1000/side (differs by pair) x 10 draws"
    w = smaller_warning(mixed)
    assert w.startswith("WARNING") and "a vs t (n=19)" in w and "c vs t (n=451)" in w and "b vs" not in w


def test_table_shows_n_warns_once_and_labels_untrained(tmp_path, capsys):
    """A source of 25 captions by an untrained captioner against 200 queries, --samples 100: n per side
    in the table, JSON and title; one warning row; the untrained model named in JSON and title."""
    rows = [
        {
            "key": f"k{i}",
            "clip_id": f"c{i}.mp4",
            "caption": f"a thing number {i}",
            "captioner": "ofa-tiny-random(untrained,seed=0)",
        }
        for i in range(25)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA), tmp_path / "captions.parquet")
    (tmp_path / "q.txt").write_text("\n".join(f"a query {i}" for i in range(200)) + "\n")
    (tmp_path / "s.txt").write_text("\n".join(f"a subtitle {i}" for i in range(300)) + "\n")
    toml = tmp_path / "s.toml"
    toml.write_text(
        '[sources.cap]\nformat = "captions_parquet"\npath = "captions.parquet"\n'
        '[sources.sub]\nformat = "text_lines"\npath = "s.txt"\n'
        '[sources.q]\nformat = "text_lines"\npath = "q.txt"\n'
    )
    out = tmp_path / "t.json"
    argv = ["--src", "cap,sub", "--tgt", "q", "--sources", str(toml), "--samples", "100", "--repeats", "3"]
    argv += [
        "--allow-smaller",
        "--no-cache",
        "--out",
        str(out),
        "--no-progress",
        "-q",
        "--mmd-permutations",
        "10",
    ]
    assert main(argv, encoder_factory=lambda *a: HashEncoder()) == 0
    printed = capsys.readouterr().out
    assert "n=25" in printed and "n=100" in printed
    assert sum(line.startswith("WARNING") for line in printed.splitlines()) == 1
    assert "UNTRAINED model(s): ofa-tiny-random(untrained,seed=0)" in printed
    table = json.loads(out.read_text())
    assert table["untrained"] is True and table["untrained_models"] == ["ofa-tiny-random(untrained,seed=0)"]
    assert {r["src"]: r["samples"] for r in table["results"]} == {"cap": 25, "sub": 100}
    assert table["n_per_side"] == "n=25..100/side (differs by pair) x 3 draws" and len(table["warnings"]) == 1
    r = table["results"][0]
    assert r["nmi_ci"] and r["k_sweep"] and "mmd2_mean" in r and r["warning"]
    run = TableRun(sources=table["sources"])
    assert run.untrained(table["encoder_id"]) == ["ofa-tiny-random(untrained,seed=0)"]


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "texts per side per draw (default: 1000)" in text and "(default: clip)" in text
    assert "(default: 2,4,8)" in text
