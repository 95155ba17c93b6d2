"""The captioner comparison on real caption outputs: the Ray caption job runs twice on the synthetic
corpus (the untrained tiny OFA, and a rule-based colour captioner), and `analysis/compare.py` reads
both OUT dirs: gap, text statistics, agreement, CIDEr-D/BLEU-4 against the corpus truth, speed, and
the gallery with every sampled clip's middle frame from the shards."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_compare_parts import _Page
from test_job_ray import TAG_VAR, tagged_processes
from test_nmi_core import HashEncoder

from analysis.compare import main

REPO = Path(__file__).resolve().parent.parent
CAPTIONERS = {"ofa": "ofa-tiny-random", "colour": "tests.gap_captioner:load"}


@pytest.fixture(scope="module")
def caption_runs(synthetic_corpus, tmp_path_factory):
    """Both jobs at once (each an embedded loopback Ray): most of a run is Ray start-up waiting."""
    root = tmp_path_factory.mktemp("compare_runs")
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({TAG_VAR: tag, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"})
    procs = {}
    for label, name in CAPTIONERS.items():
        argv = [
            sys.executable,
            str(REPO / "jobs/caption_hdvila.py"),
            "--metadata",
            str(synthetic_corpus.metadata),
        ]
        argv += ["--videos", str(synthetic_corpus.videos), "--subtitles", str(synthetic_corpus.subtitles)]
        argv += ["--out", str(root / label), "--captioner", name, "--frames", "0", "--num-cpus", "2"]
        argv += ["--captioner-cpus", "0"]
        procs[label] = subprocess.Popen(
            argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    for label, p in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, f"{label} job failed:\n{out[-4000:]}"
    deadline = time.monotonic() + 30
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not tagged_processes(tag)
    refs = root / "refs.jsonl"
    refs.write_text(
        "".join(
            json.dumps({"clip_id": c["clip_id"], "text": c["caption"]}) + "\n"
            for c in synthetic_corpus.load_truth()["clips"]
        )
    )
    toml = root / "sources.toml"
    toml.write_text(
        f'[sources.msrvtt]\nformat = "msrvtt_json"\npath = "{synthetic_corpus.downstream / "MSRVTT_data.json"}"\n'
    )
    return root, refs, toml


@pytest.mark.ray
def test_compare_two_real_caption_outputs(caption_runs, capsys):
    root, refs, toml = caption_runs
    out = root / "report"
    argv = [
        "--runs",
        f"ofa={root / 'ofa'}",
        f"colour={root / 'colour' / 'captions.parquet'}",
        "--tgt",
        "msrvtt",
    ]
    argv += [
        "--sources",
        str(toml),
        "--refs",
        str(refs),
        "--out",
        str(out),
        "--samples",
        "50",
        "--repeats",
        "4",
    ]
    argv += ["--allow-smaller", "--no-cache", "--mmd-permutations", "20", "--no-progress", "-q"]
    assert main(argv, encoder_factory=lambda *a: HashEncoder()) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("UNTRAINED model(s): ofa-tiny-random(untrained,seed=0)")
    assert "ofa (untrained)" in printed and "colour (untrained)" not in printed
    assert sum(line.startswith("WARNING: fewer texts per side") for line in printed.splitlines()) == 1

    rep = json.loads((out / "compare.json").read_text())
    assert rep["untrained"] and rep["untrained_models"] == ["ofa-tiny-random(untrained,seed=0)"]
    by = {c["label"]: c for c in rep["captioners"]}
    assert set(by) == {"ofa", "colour"} and by["ofa"]["untrained"] and not by["colour"]["untrained"]
    for c in by.values():
        assert c["clips"] == 9
        (gap,) = c["gap"]
        assert gap["tgt"] == "msrvtt" and gap["samples"] == 9 and gap["samples_requested"] == 50
        assert gap["nmi_ci"] and [s["k"] for s in gap["k_sweep"]] == [2, 4, 8] and gap["mmd_p"] is not None
        assert c["references"]["clips"] == 9
    # the colour captioner names the shape's colour, which the truth captions contain: it scores higher
    assert by["colour"]["references"]["cider_d"] > by["ofa"]["references"]["cider_d"]
    assert by["colour"]["text"]["words_mean"] == 8.0 and by["colour"]["captioners"] == [
        "colour-test-captioner(rule-based)"
    ]
    # speed: an OUT dir has the shards' per-image times and the job's summary; a bare Parquet has neither
    assert by["ofa"]["speed"]["caption_images_per_s"] > 0 and by["ofa"]["speed"]["images_timed"] == 9
    assert "CPU" in by["ofa"]["speed"]["machine"] and by["ofa"]["speed"]["job_clips_per_s"] > 0
    assert by["colour"]["speed"]["caption_images_per_s"] is None
    (agree,) = rep["agreement"]
    assert agree["clips"] == 9 and -1 <= agree["cosine_mean"] <= 1 and agree["bleu4_a_vs_b"] >= 0

    page = (out / "gallery.html").read_text()
    p = _Page()
    p.feed(page)
    clip_ids = set(caption_ids(root))
    assert {r.removeprefix("clip-") for r in p.rows} == clip_ids and len(clip_ids) == 9  # all shown (9 < 24)
    frames = [i["src"] for i in p.imgs if (i["src"] or "").startswith("data:image/jpeg;base64,")]
    assert len(frames) == 9 and all(
        base64.b64decode(f.split(",", 1)[1])[:3] == b"\xff\xd8\xff" for f in frames
    )
    assert (
        sum(1 for i in p.imgs if (i["src"] or "").startswith("data:image/png")) == 2
    )  # compare.png, gap.png
    assert (out / "compare.png").is_file() and (out / "gap.png").is_file()


def caption_ids(root: Path) -> list[str]:
    return pq.read_table(root / "ofa" / "captions.parquet").column("clip_id").to_pylist()
