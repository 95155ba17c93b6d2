"""Frame accuracy against the corpus stamps (after JPEG, both layouts, both decoders), VFR, rotation,
--store-video, and every kind of bad input the pipeline must survive with a per-clip status."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.extract import ExtractArgs, run_extract
from pipeline.plan import ExtractOptions
from synthetic.corpus import CorpusManifest
from synthetic.stamp import draw_stamp, read_stamp


def extract(out: Path, metadata: Path | str, videos: Path, **options: Any) -> dict[str, Any]:
    return run_extract(
        ExtractArgs(
            metadata=[str(metadata)],
            videos=videos,
            out=out,
            options=ExtractOptions(**options),
            progress=False,
        )
    )


def parquet_rows(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted((out / "shards").glob("*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


def tar_samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for p in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                f = tar.extractfile(m)
                assert f is not None
                samples.setdefault(key, {})[ext] = f.read()
    return samples


def jpeg_stamp(data: bytes) -> int:
    return read_stamp(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def truth_by_clip(corpus: CorpusManifest) -> dict[str, dict[str, Any]]:
    return {c["clip_id"]: c for c in corpus.load_truth()["clips"]}


def check_full_layout(out: Path, corpus: CorpusManifest, frames: int = 12) -> None:
    truth = truth_by_clip(corpus)
    rows = parquet_rows(out)
    assert sorted(r["clip_id"] for r in rows) == sorted(truth)
    samples = tar_samples(out)
    for r in rows:
        assert r["status"] == "ok", r
        t = truth[r["clip_id"]]["full_layout"]
        s = samples[r["key"]]
        assert jpeg_stamp(s["mid.jpg"]) == t["middle_index"], r["clip_id"]
        assert [jpeg_stamp(s[f"f{j:02d}.jpg"]) for j in range(frames)] == t["sampled_indices"][:frames]
        assert r["middle_time"] == pytest.approx(t["middle_time"], abs=1e-6)  # decord reports microseconds
        meta = json.loads(s["json"])
        assert meta["frame_times"] == pytest.approx(t["sampled_times"], abs=1e-6)
        assert (meta["width"], meta["height"]) == (320, 240)  # display orientation
        assert Image.open(io.BytesIO(s["mid.jpg"])).size == (224, 224)


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_full_layout_frames_exact(synthetic_corpus: CorpusManifest, tmp_path: Path, decoder: str) -> None:
    out = tmp_path / "out"
    summary = extract(
        out,
        synthetic_corpus.metadata.parent / "*.jsonl",
        synthetic_corpus.videos,
        shard_size=4,
        decoder=decoder,
    )
    assert summary["complete"] and summary["counts"] == {"ok": 9}
    check_full_layout(out, synthetic_corpus)
    # Without a captioner: null caption columns, no cap.txt, an empty captions table.
    assert all(r["caption"] is None and r["captioner"] is None for r in parquet_rows(out))
    assert not any("cap.txt" in s for s in tar_samples(out).values())
    assert pq.read_table(out / "captions.parquet").num_rows == 0


def test_clips_layout_frames_exact(synthetic_corpus: CorpusManifest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = extract(out, synthetic_corpus.metadata, synthetic_corpus.clips, layout="clips", shard_size=5)
    assert summary["counts"] == {"ok": 9}
    truth = truth_by_clip(synthetic_corpus)
    samples = tar_samples(out)
    for r in parquet_rows(out):
        t = truth[r["clip_id"]]["clips_layout"]
        s = samples[r["key"]]
        assert jpeg_stamp(s["mid.jpg"]) == t["middle_index"]
        assert [jpeg_stamp(s[f"f{j:02d}.jpg"]) for j in range(12)] == t["sampled_indices"]


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_vfr_and_rotated(synthetic_edge_corpus: CorpusManifest, tmp_path: Path, decoder: str) -> None:
    videos = {v["video_id"]: v for v in synthetic_edge_corpus.load_truth()["videos"]}
    assert any(v["vfr"] for v in videos.values()) and any(v["rotation"] for v in videos.values())
    out = tmp_path / "out"
    extract(out, synthetic_edge_corpus.metadata, synthetic_edge_corpus.videos, decoder=decoder)
    check_full_layout(out, synthetic_edge_corpus)


def test_store_video_and_subtitles(synthetic_corpus: CorpusManifest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_extract(
        ExtractArgs(
            metadata=[str(synthetic_corpus.metadata)],
            videos=synthetic_corpus.videos,
            out=out,
            options=ExtractOptions(store_video=True, frames=0, frame_size=112, shard_size=9),
            subtitles=synthetic_corpus.subtitles,
            progress=False,
        )
    )
    truth = truth_by_clip(synthetic_corpus)
    times = {v["video_id"]: v["frame_times"] for v in synthetic_corpus.load_truth()["videos"]}
    samples = tar_samples(out)
    for r in parquet_rows(out):
        tr = truth[r["clip_id"]]
        assert r["subtitle"] == tr["subtitle"]
        s = samples[r["key"]]
        assert s["sub.txt"].decode() == tr["subtitle"]
        assert not any(k.startswith("f") for k in s)  # --frames 0
        assert Image.open(io.BytesIO(s["mid.jpg"])).size == (112, 112)
        with av.open(io.BytesIO(s["mp4"])) as c:
            st = c.streams.video[0]
            assert float(st.average_rate) == pytest.approx(3.0)
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(st)]
        assert min(decoded[0].shape[:2]) == 240
        # Frame k shows the clip frame on screen at start + k/3 s (the clip's first frame before it shows).
        start, end = (Fraction(round(x * 1000), 1000) for x in tr["span_seconds"])
        ft = times[r["video_id"]]
        clip = tr["full_layout"]["frame_indices"]
        expect = []
        k = 0
        while start + Fraction(k, 3) < end:
            t = float(start + Fraction(k, 3)) + 1e-9
            expect.append(max([i for i in clip if ft[i] <= t], default=clip[0]))
            k += 1
        assert [read_stamp(f) for f in decoded] == expect


# ---------------------------------------------------------------------------------------------------
# Bad inputs


def _write_stamped(path: Path, n: int, fps: int = 30) -> None:
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps, options={"bf": "2", "threads": "1"})
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i in range(n):
            a = np.full((240, 320, 3), 90, np.uint8)
            draw_stamp(a, i)
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000, layout="mono")
        for k in range(20):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate = 16000
            f.pts = k * 1024
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def _remux_faststart(src: Path, dst: Path) -> None:
    with (
        av.open(str(src)) as inp,
        av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as out,
    ):
        v = inp.streams.video[0]
        o = out.add_stream_from_template(v)
        for p in inp.demux(v):
            if p.dts is None:
                continue
            p.stream = o
            out.mux(p)


def _meta(video_id: str, spans: list[tuple[str, str]]) -> str:
    clips = [{"clip_id": f"{video_id}.{k + 1}.mp4", "span": list(s)} for k, s in enumerate(spans)]
    return json.dumps({"video_id": video_id, "url": "u", "clip": clips})


def test_bad_inputs_fail_per_clip(synthetic_corpus: CorpusManifest, tmp_path: Path) -> None:
    vids = tmp_path / "videos"
    vids.mkdir()
    good = synthetic_corpus.videos / f"{synthetic_corpus.video_ids[0]}.mp4"
    shutil.copy(good, vids / "goodvideo01.mp4")
    data = good.read_bytes()
    (vids / "truncmoov01.mp4").write_bytes(data[: len(data) * 6 // 10])  # moov atom at the end: unreadable
    _remux_faststart(good, tmp_path / "fs.mp4")
    fs = (tmp_path / "fs.mp4").read_bytes()
    (vids / "truncfast01.mp4").write_bytes(fs[: len(fs) // 2])  # index intact, second half of the data gone
    (vids / "garbage0001.mp4").write_bytes(
        np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes()
    )
    _write_audio_only(vids / "audioonly01.mp4")
    _write_stamped(vids / "threefram01.mp4", 3)
    corrupt = bytearray(data)
    rng = np.random.default_rng(1)
    mid = len(corrupt) // 2
    corrupt[mid : mid + 4000] = rng.integers(0, 256, 4000, np.uint8).tobytes()
    (vids / "corrupted01.mp4").write_bytes(bytes(corrupt))
    (vids / "emptyfile01.mp4").write_bytes(b"")

    lines = [
        _meta(
            "goodvideo01",
            [
                ("00:00:01.000", "00:00:03.000"),  # fine
                ("00:01:00.000", "00:01:05.000"),  # starts after the end
                ("00:00:09.000", "00:00:30.000"),  # ends far past the end
                ("00:00:02.001", "00:00:02.002"),  # no frame inside the span
            ],
        ),
        _meta("truncmoov01", [("00:00:01.000", "00:00:02.000")]),
        _meta("truncfast01", [("00:00:00.100", "00:00:01.000"), ("00:00:09.000", "00:00:10.000")]),
        _meta("garbage0001", [("00:00:00.000", "00:00:01.000")]),
        _meta("audioonly01", [("00:00:00.000", "00:00:01.000")]),
        _meta("threefram01", [("00:00:00.000", "00:00:00.100")]),  # 3 frames at 30 fps
        _meta("corrupted01", [("00:00:01.000", "00:00:02.000"), ("00:00:05.000", "00:00:07.000")]),
        _meta("emptyfile01", [("00:00:00.000", "00:00:01.000")]),
        _meta("missingvid1", [("00:00:00.000", "00:00:01.000")]),
        "{broken",
    ]
    meta = tmp_path / "meta.jsonl"
    meta.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    summary = extract(out, meta, vids, shard_size=3, frames=12)
    assert summary["complete"]
    rows = parquet_rows(out)
    assert len(rows) == 15 == summary["total_clips"]
    by = {r["clip_id"]: r for r in rows}
    assert len(by) == 15 and "" in by  # the broken line gives one row with clip_id ""

    def err(cid: str) -> str:
        assert by[cid]["status"] == "failed", by[cid]
        return by[cid]["error"]

    assert by["goodvideo01.1.mp4"]["status"] == "ok"
    assert "after the video ends" in err("goodvideo01.2.mp4")
    assert "past the end of the video" in err("goodvideo01.3.mp4")
    assert "no frame has its presentation time" in err("goodvideo01.4.mp4")
    assert err("truncmoov01.1.mp4").startswith("open: ")
    assert by["truncfast01.1.mp4"]["status"] == "ok"
    assert "truncated?" in err("truncfast01.2.mp4")
    assert err("garbage0001.1.mp4").startswith("open: ")
    assert "no video stream" in err("audioonly01.1.mp4")
    assert err("emptyfile01.1.mp4").startswith("open: ")
    assert err("missingvid1.1.mp4") == "open: video file not found: missingvid1.*"
    assert [r for r in rows if r["clip_id"] == ""][0]["error"].startswith("metadata: bad JSON")
    for cid in ("corrupted01.1.mp4", "corrupted01.2.mp4"):  # either decoded or a decode error, never a crash
        assert by[cid]["status"] == "ok" or by[cid]["error"].startswith("decode:")
    samples = tar_samples(out)
    assert set(samples) == {r["key"] for r in rows if r["status"] == "ok"}
    # A clip shorter than T frames repeats frames (floor(linspace(0, 2, 12))).
    s = samples["threefram01_1"]
    assert [jpeg_stamp(s[f"f{j:02d}.jpg"]) for j in range(12)] == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
    assert jpeg_stamp(s["mid.jpg"]) == 1  # nearest to 0.05 s among 0, 1/30, 2/30 (tie -> earlier)


@pytest.mark.parametrize("decoder", ["pyav", "pyav-seek", "decord"])
def test_overlapping_unordered_and_far_apart_spans(
    synthetic_corpus: CorpusManifest, tmp_path: Path, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One video, clips that overlap, nest, repeat a span and come out of order; "pyav-seek" makes
    every gap count as far apart, so clips seek instead of continuing on the same decoder."""
    import pipeline.pyav_reader

    if decoder == "pyav-seek":
        monkeypatch.setattr(pipeline.pyav_reader, "SEEK_GAP_S", Fraction(-100))
        decoder = "pyav"
    from pipeline.decode import FrameSpec, decode_video_clips
    from pipeline.metadata import ClipRow
    from synthetic.corpus import sampled_positions

    vid = synthetic_corpus.video_ids[0]
    info = {v["video_id"]: v for v in synthetic_corpus.load_truth()["videos"]}[vid]
    times = [Fraction(i, 30) for i in range(info["num_frames"])]  # constant 30 fps video
    assert info["fps"] == 30.0
    end_ms = int(times[-1] * 1000)
    spans_ms = [
        (1010, 3020),
        (2010, 4020),
        (510, 9020),
        (2010, 4020),
        (8010, 8520),
        (210, 610),
        (end_ms - 400, end_ms),
    ]
    rows = [
        ClipRow(k, f"{vid}.{k + 1}.mp4", vid, a / 1000, b / 1000, "test")
        for k, (a, b) in enumerate([spans_ms[6], *spans_ms[:6]])  # the far-away clip first in metadata order
    ]
    results = decode_video_clips(
        synthetic_corpus.videos / f"{vid}.mp4", rows, FrameSpec(frames=12), decoder=decoder
    )
    assert [r.row.index for r in results] == list(range(len(rows)))
    for res in results:
        assert res.status == "ok", res.error
        start, end = res.row.span_fractions
        frames = [i for i, t in enumerate(times) if start <= t < end]
        mid = min(frames, key=lambda i: (abs(times[i] - (start + end) / 2), i))
        assert read_stamp(res.middle) == mid
        got = [read_stamp(f) for f in res.frames]
        assert got == [frames[p] for p in sampled_positions(len(frames), 12)]


def test_unexpected_decoder_error_fails_only_that_video(
    synthetic_corpus: CorpusManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.extract

    real = pipeline.extract.decode_video_clips
    bad = synthetic_corpus.video_ids[2]

    def flaky(path: Path, rows: Any, *a: Any, **k: Any) -> Any:
        if rows[0].video_id == bad:
            raise MemoryError("simulated")
        return real(path, rows, *a, **k)

    monkeypatch.setattr(pipeline.extract, "decode_video_clips", flaky)
    out = tmp_path / "out"
    summary = extract(out, synthetic_corpus.metadata, synthetic_corpus.videos, frames=2, shard_size=9)
    assert summary["complete"] and summary["counts"] == {"ok": 6, "failed": 3}
    for r in parquet_rows(out):
        if r["video_id"] == bad:
            assert r["error"] == "decode: internal error MemoryError: simulated"
