"""A transformers family through the caption job's own stages, in process (no Ray): decode with the early
squash the captioner states -> CaptionerWorker -> shard writer -> finalize. Captions land in the same output
format (captions.parquet, K.cap.txt) as OFA's; and the job's driver refuses unusable captioner options."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import caption_hdvila, caption_stages
from pipeline.metadata import open_subtitles
from pipeline.plan import iter_shards, load_or_create_plan
from pipeline.shards import finalize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _argv(corpus, out: Path, *extra: str) -> list[str]:  # noqa: ANN001
    return [
        "--metadata",
        str(corpus.metadata),
        "--videos",
        str(corpus.videos),
        "--out",
        str(out),
        "--subtitles",
        str(corpus.subtitles),
        "--shard-size",
        "4",
        *extra,
    ]


def _cap_txt(tar: Path) -> dict[str, str]:
    with tarfile.open(tar) as tf:
        return {
            m.name.removesuffix(".cap.txt"): tf.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tf.getmembers()
            if m.name.endswith(".cap.txt")
        }


def test_florence2_tiny_through_the_job_stages(synthetic_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    args = caption_hdvila.build_parser().parse_args(
        _argv(synthetic_corpus, out, "--captioner", "florence2-tiny-random", "--caption-input-size", "auto")
    )
    cap_options, size = caption_hdvila.check_captioner(args)
    assert size == 64  # the size the tiny Florence-2 states
    options = caption_hdvila.extract_options(args)
    plan = load_or_create_plan(out, args.metadata, args.videos, options, False, args.subtitles)
    subtitles = open_subtitles(Path(args.subtitles), out / "index")[0]
    worker = caption_stages.CaptionerWorker(args.captioner, cap_options)
    expected: dict[str, str] = {}
    for spec in iter_shards(plan):
        results, middles, n = caption_stages.decode(spec, args.videos, options, subtitles, size)
        assert n == len(middles) and all(m.shape == (64, 64, 3) for m in middles.values())
        captions = worker.caption(middles)
        # Native frames give the same captions: the early squash is the captioner's own first step.
        _, native, _ = caption_stages.decode(spec, args.videos, options, subtitles, 0)
        assert {k: c.caption for k, c in worker.caption(native).items()} == {
            k: c.caption for k, c in captions.items()
        }
        expected.update({k: c.caption for k, c in captions.items() if c.caption is not None})
        caption_stages.write(str(out), spec, results, captions, options, time.time())
    finalize(out, plan, {"runner": "in-process test"})

    table = pq.read_table(out / "captions.parquet").to_pylist()
    assert {r["clip_id"]: r["caption"] for r in table} == expected
    assert len(expected) == len(synthetic_corpus.clip_ids) and len(set(expected.values())) > 1
    assert all(r["captioner"].startswith("florence2-tiny-random(untrained,seed=0,") for r in table)
    by_key = {r["key"]: r["caption"] for r in table}
    in_tars: dict[str, str] = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        in_tars.update(_cap_txt(tar))
    assert in_tars == by_key


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--captioner", "blip", "--model-dir", "/nonexistent/blip"), "does not exist"),
        (("--captioner", "ofa"), "needs --checkpoint and --bpe-dir"),
        (("--checkpoint", "/nonexistent.pt", "--bpe-dir", "/tmp"), "checkpoint not found"),
        (("--captioner", "blip-tiny-random", "--caption-input-size", "480"), "takes 32 x 32 frames"),
        (("--captioner", "noop", "--beam", "3"), "does not take beam"),
    ],
)
def test_job_refuses_unusable_captioner_options_before_any_work(
    synthetic_corpus,  # noqa: ANN001
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    message: str,
) -> None:
    out = tmp_path / "out"
    assert caption_hdvila.main(_argv(synthetic_corpus, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()  # nothing written, no Ray started


def test_plan_records_what_shapes_the_captions(tmp_path: Path) -> None:
    """JSON-ready values; options added with the transformers families appear only when given."""
    base = ["--metadata", "m.jsonl", "--videos", "v", "--out", str(tmp_path)]
    args = caption_hdvila.build_parser().parse_args([*base, "--checkpoint", "c.pt", "--bpe-dir", "b"])
    assert caption_hdvila.extract_options(args).extra == {
        "captioner": "ofa",
        "checkpoint": "c.pt",
        "dtype": None,
    }
    args = caption_hdvila.build_parser().parse_args(
        [*base, "--captioner", "blip", "--model-dir", "m", "--beam", "2", "--dtype", "bfloat16"]
    )
    assert caption_hdvila.extract_options(args).extra == {
        "captioner": "blip",
        "checkpoint": None,
        "dtype": "bfloat16",
        "model_dir": "m",
        "beam": 2,
    }
