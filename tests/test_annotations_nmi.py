"""Raw subtitle files give the NMI of the hand-cleaned text (all-MiniLM-L6-v2), and a broken file is
one line and exit 2 from both entry points."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from analysis.encoders import LazyEncoder, MiniLMEncoder, load_encoder
from analysis.nmi import main
from analysis.sources import load_registry, load_source
from synthetic.texts import generate, youtube_vtt

SIZES = ["--samples", "40", "--repeats", "2", "--no-cache", "--no-progress", "-q", "--encoder", "minilm"]


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def factory(encoder):
    def make(name, clip_weights, clip_tokenizer, opts, cache_root):
        real = load_encoder(name, clip_weights, clip_tokenizer, opts, cache_root)
        return LazyEncoder(real.id, lambda: encoder)

    return make


def write_registry(tmp_path: Path) -> tuple[Path, list[str]]:
    """Two YouTube-style VTT files, the same lines cleaned by hand (one per line), MSR-VTT-style
    queries, and a broken VTT file."""
    subs = tmp_path / "subs"
    subs.mkdir()
    clean: list[str] = []
    for k in range(2):
        lines = [ln for ln in dict.fromkeys(generate("hdvila_sub", 30, seed=k)) if ln not in clean]
        (subs / f"vid{k}.en.vtt").write_text(youtube_vtt(lines, seed=k), encoding="utf-8")
        clean += lines
    (tmp_path / "clean.txt").write_text("\n".join(clean) + "\n", encoding="utf-8")
    with (tmp_path / "msrvtt.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, s in enumerate(generate("msrvtt", 60, seed=0)):
            w.writerow([f"ret{i}", f"msr{i}", f"video{i}", s])
    (tmp_path / "broken.vtt").write_text("1\n00:00:01,000 --> oops\n", encoding="utf-8")
    reg = tmp_path / "sources.toml"
    reg.write_text(
        '[sources.youtube]\nformat = "subtitle_folder"\npath = "subs"\n'
        '[sources.clean]\nformat = "text_lines"\npath = "clean.txt"\n'
        '[sources.msrvtt]\nformat = "msrvtt_csv"\npath = "msrvtt.csv"\n'
        '[sources.broken]\nformat = "webvtt"\npath = "broken.vtt"\n'
    )
    return reg, clean


def test_raw_vtt_gives_the_nmi_of_hand_cleaned_text(minilm, tmp_path: Path) -> None:
    reg, clean = write_registry(tmp_path)
    out = tmp_path / "t.json"
    rc = main(
        ["--sources", str(reg), "--src", "youtube,clean", "--tgt", "msrvtt", "--out", str(out), *SIZES],
        encoder_factory=factory(minilm),
    )
    assert rc == 0
    res = {r["src"]: r for r in json.loads(out.read_text())["results"]}
    assert res["youtube"]["src_texts"] == res["clean"]["src_texts"] == len(clean)
    assert res["youtube"]["nmi_runs"] == res["clean"]["nmi_runs"]  # same texts, same draws: exactly equal
    registry = load_registry(reg)
    assert load_source(registry["youtube"]).texts == load_source(registry["clean"]).texts == clean


def test_broken_subtitle_file_is_one_line_exit_2(minilm, tmp_path: Path, capsys) -> None:
    reg, _ = write_registry(tmp_path)
    rc = main(
        ["--sources", str(reg), "--src", "broken", "--tgt", "msrvtt", *SIZES], encoder_factory=factory(minilm)
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "broken.vtt" in err and "webvtt expects" in err and "found first line '1'" in err
