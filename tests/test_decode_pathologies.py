"""The decode invariant on generated real-world pathologies (synthetic.pathologies): every clip is ok
with exactly the frame a decode from the start of the file gives, or failed with a reason; the
outcome does not depend on how clips are grouped, on --frames, or on clip order."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import pipeline.pyav_reader
from pipeline.decode import ClipResult, FrameSpec, decode_video_clips, normalise_error
from pipeline.metadata import ClipRow
from pipeline.random_access import is_clean_random_access
from synthetic.pathologies import OUTPUT_ORDER_FILES, TRUTH, check_pathologies, write_pathologies
from synthetic.stamp import read_stamp

KEYFRAME_PATHOLOGIES = ("open_gop.mp4", "intra_refresh.mp4", "sync_on_p.nut", "no_recovery_point_444.nut")
TIME_PATHOLOGIES = OUTPUT_ORDER_FILES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pathologies")
    write_pathologies(root)
    return root, json.loads((root / TRUTH).read_text())


def _rows(name: str, times: list[Fraction]) -> list[ClipRow]:
    """Spans that start on, between and just after keyframes, overlap, and reach the last frame."""
    cuts = [
        (0, 7),
        (3, 14),
        (11, 13),
        (12, 25),
        (17, 30),
        (23, 24),
        (25, len(times) - 1),
        (30, len(times) - 1),
    ]
    mid = Fraction(1, 120)  # a quarter frame: spans fall between frames, as real spans do
    return [
        ClipRow(k, f"{name}.{k}", name, float(times[a] + mid), float(times[b] + mid), "t")
        for k, (a, b) in enumerate(cuts)
    ]


def _outcome(r: ClipResult) -> tuple:
    if r.status != "ok":
        return ("failed", r.error)
    assert r.middle is not None
    return ("ok", read_stamp(r.middle), r.middle_time)


def test_every_pathology_gives_the_truth(corpus: tuple[Path, dict]) -> None:
    root, truth = corpus
    assert check_pathologies(root) == []
    for name in (*KEYFRAME_PATHOLOGIES, *TIME_PATHOLOGIES, "sar_16_9.mp4", "rotated_90.mp4", "vfr.mp4"):
        times = [Fraction(t) for t in truth[name]["times"]]
        stamps = truth[name]["stamps"]
        results = decode_video_clips(root / name, _rows(name, times), FrameSpec(frames=12))
        for r in results:
            assert r.status == "ok", (name, r.error)  # every file decodes cleanly from its start
            assert r.time_source == truth[name]["time_source"]
            start, end = r.row.span_fractions
            clip = [i for i, t in enumerate(times) if start <= t < end]
            mid = min(clip, key=lambda i: (abs(times[i] - (start + end) / 2), i))
            assert r.middle is not None and read_stamp(r.middle) == stamps[mid], name
            assert r.middle_time == float(times[mid])
            want = [stamps[clip[int(p)]] for p in np.floor(np.linspace(0, len(clip) - 1, 12))]
            assert [read_stamp(f) for f in r.frames] == want, name


def test_clips_layout_uses_output_order(corpus: tuple[Path, dict]) -> None:
    root, truth = corpus
    for name in (*KEYFRAME_PATHOLOGIES, *TIME_PATHOLOGIES):
        row = ClipRow(0, name, name, 0.0, 1.0, "t")
        (r,) = decode_video_clips(root / name, [row], FrameSpec(frames=4), whole_file=True)
        n = len(truth[name]["stamps"])
        assert r.status == "ok" and r.middle is not None, r.error
        assert read_stamp(r.middle) == truth[name]["stamps"][n // 2]


def test_outcome_independent_of_grouping_frames_and_order(
    corpus: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard size (which clips of a video decode together), --frames and clip order change nothing."""
    root, truth = corpus
    for name in (*KEYFRAME_PATHOLOGIES, "decode_order_pts.mkv"):
        rows = _rows(name, [Fraction(t) for t in truth[name]["times"]])
        together = [_outcome(r) for r in decode_video_clips(root / name, rows, FrameSpec(frames=12))]
        alone = [_outcome(decode_video_clips(root / name, [r], FrameSpec(frames=0))[0]) for r in rows]
        backwards = decode_video_clips(root / name, rows[::-1], FrameSpec(frames=3))[::-1]
        assert together == alone == [_outcome(r) for r in backwards], name
        monkeypatch.setattr(pipeline.pyav_reader, "SEEK_GAP_S", Fraction(-100))  # every clip seeks
        seeking = [_outcome(r) for r in decode_video_clips(root / name, rows, FrameSpec(frames=12))]
        monkeypatch.undo()
        assert seeking == together, name


def _keyframe_packets(path: Path) -> tuple[str, bytes | None, list[bytes]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        keys = [bytes(p) for p in c.demux(s) if p.size and p.is_keyframe]
        return s.codec_context.name, s.codec_context.extradata, keys


def test_unclean_keyframes_are_recognised(corpus: tuple[Path, dict]) -> None:
    root, _ = corpus
    for name, clean_after_first in (
        ("open_gop.mp4", True),  # recovery point with recovery_frame_cnt 0
        ("rotated_90.mp4", True),  # IDR
        ("intra_refresh.mp4", False),
        ("sync_on_p.nut", False),
        ("no_recovery_point_444.nut", False),
    ):
        codec, extra, keys = _keyframe_packets(root / name)
        assert len(keys) >= 3 and is_clean_random_access(codec, extra, keys[0])
        assert [is_clean_random_access(codec, extra, k) for k in keys[1:]] == [clean_after_first] * (
            len(keys) - 1
        )


def test_runtime_guards_catch_concealed_frames(
    corpus: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the keyframe check switched off and the decoder told to show concealed pictures (as
    FFmpeg does on real files it cannot flag), the decode-time guards still store only true frames.
    The naive decode from the same keyframe is wrong, so this test can fail."""
    root, truth = corpus
    name = "sync_on_p.nut"
    with av.open(str(root / name)) as c:
        s = c.streams.video[0]
        s.codec_context.options = {"flags2": "+showall"}
        full = {f.pts: f.to_ndarray(format="rgb24") for f in c.decode(s)}
    with av.open(str(root / name)) as c:
        s = c.streams.video[0]
        s.codec_context.options = {"flags2": "+showall"}
        packets = [p for p in c.demux(s) if p.size]
        k = [i for i, p in enumerate(packets) if p.is_keyframe][2]
        naive = [f for p in [*packets[k:], None] for f in s.codec_context.decode(p)]
    assert any(np.abs(f.to_ndarray(format="rgb24").astype(int) - full[f.pts]).mean() > 10 for f in naive)

    real_init = pipeline.pyav_reader.PyAVReader.__init__

    def showall(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
        real_init(self, *a, **kw)
        self.cc.options = {"flags2": "+showall"}

    monkeypatch.setattr(pipeline.pyav_reader.PyAVReader, "__init__", showall)
    monkeypatch.setattr(pipeline.pyav_reader, "is_clean_random_access", lambda *_: True)
    times = [Fraction(t) for t in truth[name]["times"]]
    for r in decode_video_clips(root / name, _rows(name, times), FrameSpec(frames=12)):
        start, end = r.row.span_fractions
        clip = [i for i, t in enumerate(times) if start <= t < end]
        mid = min(clip, key=lambda i: (abs(times[i] - (start + end) / 2), i))
        assert r.status == "ok" and r.middle is not None, r.error
        assert read_stamp(r.middle) == truth[name]["stamps"][mid]


def test_decord_is_exact_or_refused_with_reason(corpus: tuple[Path, dict]) -> None:
    root, truth = corpus
    assert check_pathologies(root, decoder="decord") == []
    for name in ("intra_refresh.mp4", "sync_on_p.nut", "no_recovery_point_444.nut", *TIME_PATHOLOGIES):
        rows = _rows(name, [Fraction(t) for t in truth[name]["times"]])[:1]
        (r,) = decode_video_clips(root / name, rows, FrameSpec(frames=0), decoder="decord")
        assert r.status == "failed" and r.error is not None and r.error.startswith("decode: decord refused: ")


def test_error_text_is_normalised() -> None:
    raw = "[22:59:11] /src/video_reader.cc:83: ERROR opening: [h264 @ 0x55d0c1a2b3c0] bad"
    assert normalise_error(raw) == "/src/video_reader.cc:83: ERROR opening: [h264] bad"
    assert normalise_error("decode: x at 0x7f12ab34cd56") == "decode: x at"
    assert ClipResult.failed(ClipRow(0, "a", "a", 0, 1, "t"), "decode: [01:02:03] y").error == "decode: y"


def test_corpus_cli_writes_and_checks_the_pathologies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from synthetic.corpus import main

    assert main(["--out", str(tmp_path), "--pathologies"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pyav"] == [] and report["decord"] == [] and "b_frames.avi" in report["files"]
    assert (tmp_path / "pathologies" / TRUTH).is_file()


def _described(c: av.container.InputContainer) -> dict:
    s = c.streams.video[0]
    cc = s.codec_context
    return {
        "rate": s.average_rate,
        "start": s.start_time,
        "duration": s.duration,
        "time_base": s.time_base,
        "size": (cc.width, cc.height),
        "reorders": bool(cc.has_b_frames),
        "sar": s.sample_aspect_ratio,
        "extradata": cc.extradata,
        "codec": cc.name,
    }


def test_the_open_probe_describes_every_pathology_as_a_full_probe_does(corpus: tuple[Path, dict]) -> None:
    """open_video skips decoding in FFmpeg's probe only where that changes nothing the reader reads; a
    header-only probe elsewhere would (NUT: no start time; an SPS without bitstream restriction: no
    reorder flag), so those files must get the full probe."""
    root, truth = corpus
    skipped = []
    for name in truth:
        path = str(root / name)
        with av.open(path) as full, pipeline.pyav_reader.open_video(path) as ours:
            if not full.streams.video:
                continue
            described = _described(full)
            assert _described(ours) == described, name
            if ours.options:
                skipped.append(name)
        with av.open(path, options={"skip_frame": "all"}) as header_only:
            if name.endswith(".nut"):
                assert _described(header_only)["start"] != described["start"], name
    assert "open_gop.mp4" in skipped and "vfr.mp4" in skipped  # mp4 H.264 with B-frames: headers only
    assert not any(n.endswith((".nut", ".avi", ".mkv")) for n in skipped)
