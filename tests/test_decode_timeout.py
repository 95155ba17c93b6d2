"""The per-video time budget (--item-timeout): a decoder that hangs fails its own clips with
"decode: timeout after N s" and everything else goes on, in `pipeline extract` and in the Ray job."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import pipeline.decode
from pipeline.extract import ExtractArgs, run_extract
from pipeline.plan import ExtractOptions
from synthetic.corpus import CorpusManifest


def _statuses(out: Path) -> dict[str, tuple[str, str | None]]:
    rows = [r for f in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return {r["clip_id"]: (r["status"], r["error"]) for r in rows}


def test_extract_fails_a_hanging_video_and_goes_on(
    synthetic_corpus: CorpusManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hang = synthetic_corpus.video_ids[1]
    release = threading.Event()
    real = pipeline.decode._decode_engines

    def stand_in(path: Path, rows: Any, *a: Any, **kw: Any) -> Any:
        if path.stem == hang:
            release.wait()  # a decoder stuck inside native code: it never looks at its deadline
        return real(path, rows, *a, **kw)

    monkeypatch.setattr(pipeline.decode, "_decode_engines", stand_in)
    options = ExtractOptions(frames=2, shard_size=4, item_timeout=1.0)
    t0 = time.monotonic()
    try:
        summary = run_extract(
            ExtractArgs(
                [str(synthetic_corpus.metadata)],
                synthetic_corpus.videos,
                tmp_path / "out",
                options,
                progress=False,
            )
        )
    finally:
        release.set()
    assert summary["complete"] and time.monotonic() - t0 < 60
    got = _statuses(tmp_path / "out")
    assert len(got) == len(synthetic_corpus.clip_ids)
    for clip_id, (status, error) in got.items():
        if clip_id.startswith(hang + "."):
            assert (status, error) == ("failed", "decode: timeout after 1 s")
        else:
            assert status == "ok", error
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["options"].get("item_timeout") is None


def test_pyav_engine_stops_itself_at_the_deadline(synthetic_corpus: CorpusManifest) -> None:
    """The engine's own check (between packets): a budget already spent fails the clips, no thread left."""
    from pipeline.metadata import ClipRow

    vid = synthetic_corpus.video_ids[0]
    rows = [ClipRow(0, f"{vid}.1.mp4", vid, 1.0, 3.0, "t")]
    spec = pipeline.decode.FrameSpec(frames=2, item_timeout=1e-9)
    (r,) = pipeline.decode.decode_video_clips(synthetic_corpus.videos / f"{vid}.mp4", rows, spec)
    assert (r.status, r.error) == ("failed", "decode: timeout after 1e-09 s")


def hanging_decode(spec: Any, videos_root: str, options: Any, subtitles: Any, caption_size: int = 0) -> Any:
    """The Ray decode stage, except that the video HANG_VIDEO never finishes (runs in a Ray worker)."""
    from jobs import caption_stages

    if any(r.video_id == HANG_VIDEO[0] for r in spec.rows):
        time.sleep(3600)  # only cancelling the task (killing its worker) ends this
    return caption_stages.decode(spec, videos_root, options, subtitles, caption_size)


HANG_VIDEO: list[str] = [""]


def _warm(seconds: float) -> None:
    import jobs.caption_stages  # noqa: F401  (PyAV, numpy, pyarrow)

    time.sleep(seconds)  # hold the CPU so that the other warm-up task gets its own worker


def test_ray_job_cancels_a_stuck_decode_task(synthetic_corpus: CorpusManifest, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from jobs.shard_stream import Progress, StreamConfig, run_stream
    from pipeline.plan import iter_shards, load_or_create_plan

    HANG_VIDEO[0] = synthetic_corpus.video_ids[1]
    out = tmp_path / "out"
    options = ExtractOptions(frames=2, shard_size=3, item_timeout=1.0)  # shard = one video
    plan = load_or_create_plan(out, [str(synthetic_corpus.metadata)], synthetic_corpus.videos, options)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        # Start both decode workers first (importing PyAV on this box takes seconds), so that the
        # budgets below time decoding, not worker start-up; a production run has 30 s of slack for that.
        ray.get([ray.remote(num_cpus=1)(_warm).remote(0.5) for _ in range(2)])
        cfg = StreamConfig(
            captioner="noop", captioner_cpus=0, decode_slack_s=3.0, max_inflight=3, progress_every_s=1
        )
        progress = Progress(
            total_clips=plan.total_clips, todo_clips=plan.total_clips, todo_shards=plan.num_shards
        )
        result = run_stream(
            str(out),
            iter_shards(plan),
            str(synthetic_corpus.videos),
            options,
            None,
            cfg,
            progress,
            hanging_decode,
        )
    finally:
        ray.shutdown()
    assert result.unwritten == {} and result.written == plan.num_shards
    assert result.decode_cancelled >= 2  # the shard's task, then the hanging clips' own tasks
    got = _statuses(out)
    assert len(got) == len(synthetic_corpus.clip_ids)
    for clip_id, (status, error) in got.items():
        if clip_id.startswith(HANG_VIDEO[0] + "."):
            assert (status, error) == ("failed", "decode: timeout after 1 s")
        else:
            assert status == "ok", error
