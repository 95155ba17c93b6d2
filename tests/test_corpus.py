"""The synthetic corpus: formats, frame stamps, truth (recomputed from decoded pts), determinism, content."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from PIL import Image

from synthetic.content import COLOURS, MOTIONS, SHAPES
from synthetic.corpus import CorpusManifest, generate, load_manifest, main
from synthetic.stamp import MAX_INDEX, band_top, draw_stamp, read_stamp

SPAN_RE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3})$")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")
ROOT = Path(__file__).resolve().parents[1]


# ---- helpers: an independent reading of the files --------------------------------------------------


def decode(path: Path) -> tuple[list[np.ndarray], list[float], list[int]]:
    """Display-orientation RGB frames, presentation times (s) and the display-matrix rotation per frame."""
    frames, times, rotations = [], [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            # frame.rotation: counter-clockwise degrees to rotate the coded picture for display.
            frames.append(np.ascontiguousarray(np.rot90(rgb, k=frame.rotation // 90)))
            times.append(float(frame.time))
            rotations.append(frame.rotation)
    return frames, times, rotations


def parse_span(text: str) -> float:
    m = SPAN_RE.match(text)
    assert m, text
    h, mi, s, ms = (int(g) for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def floor_linspace(n: int, t: int) -> list[int]:
    return np.floor(np.linspace(0, n - 1, t)).astype(int).tolist()


def jpeg_squash(frame: np.ndarray, size: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(frame).resize((size, size), Image.BICUBIC).save(buf, "JPEG", quality=90)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---- stamp -----------------------------------------------------------------------------------------


def test_stamp_round_trip_and_rejection() -> None:
    rng = np.random.default_rng(0)
    for index in (0, 1, 2, 255, 256, 4095, 12345, MAX_INDEX):
        frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        draw_stamp(frame, index)
        assert read_stamp(frame) == index
        for size in (224, 112, 64):
            assert read_stamp(jpeg_squash(frame, size)) == index
    with pytest.raises(ValueError, match="outside"):
        draw_stamp(np.zeros((240, 320, 3), np.uint8), MAX_INDEX + 1)
    with pytest.raises(ValueError):  # noise, no stamp
        read_stamp(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="sync"):  # clean black band but no stamp
        read_stamp(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        read_stamp(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="HxWx3"):
        read_stamp(np.zeros((240, 320), np.uint8))
    # One flipped data cell (row 0, cell 5 of 14) must be caught by the checksum, not misread.
    frame = np.zeros((240, 320, 3), np.uint8)
    draw_stamp(frame, 1000)
    top = band_top(240)
    cell = frame[top : top + 15, 5 * 320 // 14 + 3 : 6 * 320 // 14 - 3]
    cell[...] = 255 - cell
    with pytest.raises(ValueError, match="checksum"):
        read_stamp(frame)


def test_stamps_read_back_on_every_decoded_frame(synthetic_corpus: CorpusManifest) -> None:
    """Every frame of every file reads back natively; every frame of one full video also after a
    squash to 224x224 and to 112x112 followed by JPEG q90."""
    truth = synthetic_corpus.load_truth()
    files = [synthetic_corpus.root / v["path"] for v in truth["videos"]]
    files += [synthetic_corpus.clips / c.split(".")[0] / c for c in synthetic_corpus.clip_ids]
    files += sorted((synthetic_corpus.downstream / "videos").glob("*.mp4"))
    checked = 0
    for k, path in enumerate(files):
        frames, _, _ = decode(path)
        assert frames, path
        for index, frame in enumerate(frames):
            assert read_stamp(frame) == index, (path, index)
            if k == 0:
                assert read_stamp(jpeg_squash(frame, 224)) == index, (path, index)
                assert read_stamp(jpeg_squash(frame, 112)) == index, (path, index)
                checked += 1
    assert checked > 300


# ---- truth -----------------------------------------------------------------------------------------


def check_truth(manifest: CorpusManifest) -> None:
    """Recompute every clip's frames from decoded pts and the metadata spans; compare with truth.json."""
    truth = manifest.load_truth()
    t_frames = truth["T"]
    clips_truth = {c["clip_id"]: c for c in truth["clips"]}
    videos_truth = {v["video_id"]: v for v in truth["videos"]}
    lines = [json.loads(line) for line in manifest.metadata.read_text().splitlines()]
    assert [ln["video_id"] for ln in lines] == list(manifest.video_ids)
    for line in lines:
        full_frames, times, _ = decode(manifest.videos / f"{line['video_id']}.mp4")
        video = videos_truth[line["video_id"]]
        assert len(times) == video["num_frames"]
        np.testing.assert_allclose(times, video["frame_times"], atol=1e-9)
        for clip in line["clip"]:
            start, end = (parse_span(s) for s in clip["span"])
            mid = (start + end) / 2
            indices = [i for i, t in enumerate(times) if start <= t < end]
            # The margins promised by the generator: no frame within 1 ms of a bound, a unique middle.
            assert min(abs(t - b) for t in times for b in (start, end)) > 1e-3
            distances = sorted((abs(t - mid), i) for i, t in enumerate(times))
            assert distances[1][0] - distances[0][0] > 1e-3
            middle = distances[0][1]
            sampled = [indices[p] for p in floor_linspace(len(indices), t_frames)]
            expect = clips_truth[clip["clip_id"]]
            full = expect["full_layout"]
            assert full["frame_indices"] == indices
            assert full["middle_index"] == middle
            assert full["middle_time"] == pytest.approx(times[middle], abs=1e-9)
            assert full["sampled_indices"] == sampled
            assert full["sampled_times"] == pytest.approx([times[i] for i in sampled], abs=1e-9)
            assert expect["span"] == clip["span"]
            if not video["vfr"]:  # odd frame counts: both layouts pick the same picture as middle
                assert middle == indices[len(indices) // 2]

            # clips layout: the clip file holds exactly the span's frames (same pixels above the band).
            clip_frames, clip_times, _ = decode(manifest.clips / line["video_id"] / clip["clip_id"])
            n = len(clip_frames)
            assert n == len(indices) == expect["clips_layout"]["num_frames"]
            assert expect["clips_layout"]["middle_index"] == n // 2
            assert expect["clips_layout"]["sampled_indices"] == floor_linspace(n, t_frames)
            np.testing.assert_allclose(
                np.array(clip_times) + times[indices[0]], [times[i] for i in indices], atol=1e-9
            )
            top = band_top(clip_frames[0].shape[0])
            for j in (0, n // 2, n - 1):
                diff = np.abs(clip_frames[j][:top].astype(int) - full_frames[indices[j]][:top].astype(int))
                assert diff.mean() < 4.0, (clip["clip_id"], j, diff.mean())  # two lossy encodes of one frame


def test_truth_matches_decoded_pts(synthetic_corpus: CorpusManifest) -> None:
    check_truth(synthetic_corpus)
    truth = synthetic_corpus.load_truth()
    assert all(c["fps"] == 30.0 for c in truth["clips"])
    # Some clip starts exactly where the previous ends (adjacent spans) in the default layout family.
    spans = [c["span"] for c in truth["clips"]]
    assert len(spans) == 9


def test_edge_cases_vfr_and_rotation(synthetic_edge_corpus: CorpusManifest) -> None:
    check_truth(synthetic_edge_corpus)
    truth = synthetic_edge_corpus.load_truth()
    vfr, rotated = truth["videos"]
    assert vfr["vfr"] and vfr["fps"] is None and vfr["rotation"] == 0 and vfr["audio"]
    for path in [synthetic_edge_corpus.root / vfr["path"]] + sorted(
        (synthetic_edge_corpus.clips / vfr["video_id"]).iterdir()
    ):
        with av.open(str(path)) as container:
            assert [s.type for s in container.streams] == ["audio", "video"]
            assert container.streams[0].codec_context.name == "aac"
    assert not rotated["vfr"] and rotated["rotation"] == -90

    _, times, _ = decode(synthetic_edge_corpus.root / vfr["path"])
    durations = np.round(np.diff(times), 6)
    assert len(set(durations.tolist())) >= 3, "VFR video should have several distinct frame durations"

    path = synthetic_edge_corpus.root / rotated["path"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (240, 320)  # coded: portrait
        coded = next(container.decode(stream))
        assert coded.rotation == -90
        coded_rgb = coded.to_ndarray(format="rgb24")
    with pytest.raises(ValueError):  # the stamp is only right way up after applying the display matrix
        read_stamp(coded_rgb)
    frames, _, rotations = decode(path)
    assert set(rotations) == {-90}
    assert frames[0].shape == (240, 320, 3)
    assert [read_stamp(f) for f in frames] == list(range(len(frames)))
    # decord applies the display matrix itself.
    reader = decord.VideoReader(str(path))
    assert [read_stamp(reader[i].asnumpy()) for i in (0, len(frames) - 1)] == [0, len(frames) - 1]
    clip_id = rotated["clip_ids"][0]
    _, _, clip_rotations = decode(synthetic_edge_corpus.clips / rotated["video_id"] / clip_id)
    assert set(clip_rotations) == {-90}


# ---- formats ---------------------------------------------------------------------------------------


def test_metadata_and_side_files_follow_the_contracts(synthetic_corpus: CorpusManifest) -> None:
    lines = [json.loads(line) for line in synthetic_corpus.metadata.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert set(line) == {"video_id", "url", "clip"}
        assert ID_RE.match(line["video_id"])
        assert line["url"] == f"https://www.youtube.com/watch?v={line['video_id']}"
        previous_end = 0.0
        for k, clip in enumerate(line["clip"], start=1):
            assert set(clip) == {"clip_id", "span"}
            assert clip["clip_id"] == f"{line['video_id']}.{k}.mp4"
            start, end = (parse_span(s) for s in clip["span"])
            assert previous_end <= start < end
            assert 1.9 < end - start < 4.2
            previous_end = end
            assert (synthetic_corpus.clips / line["video_id"] / clip["clip_id"]).is_file()
        assert (synthetic_corpus.videos / f"{line['video_id']}.mp4").is_file()

    subtitles = [json.loads(line) for line in synthetic_corpus.subtitles.read_text().splitlines()]
    assert [s["clip_id"] for s in subtitles] == list(synthetic_corpus.clip_ids)
    truth = {c["clip_id"]: c for c in synthetic_corpus.load_truth()["clips"]}
    for sub in subtitles:
        assert set(sub) == {"clip_id", "text"}
        text = sub["text"]
        assert text and text == text.lower() and not re.search(r"[.,!?;:]", text)
        assert truth[sub["clip_id"]]["caption"] not in text  # speech never is the descriptive caption
    assert load_manifest(synthetic_corpus.root) == synthetic_corpus


def test_captions_and_downstream_files(synthetic_corpus: CorpusManifest) -> None:
    truth = synthetic_corpus.load_truth()
    for clip in truth["clips"]:
        a = clip["attributes"]
        assert a["colour"] in COLOURS and a["shape"] in SHAPES and a["motion"] in MOTIONS
        assert clip["caption"].startswith(f"a {a['colour']} {a['shape']} moving ")

    root = synthetic_corpus.downstream
    data = json.loads((root / "MSRVTT_data.json").read_text())
    videos = {v["video_id"]: v for v in data["videos"]}
    assert list(videos) == list(synthetic_corpus.downstream_ids)
    assert [v["split"] for v in data["videos"]] == ["train"] * 4 + ["validate"] * 2 + ["test"] * 2
    sentences: dict[str, list[str]] = {}
    for s in data["sentences"]:
        sentences.setdefault(s["video_id"], []).append(s["caption"])
    assert [s["sen_id"] for s in data["sentences"]] == list(range(len(data["sentences"])))
    down_truth = {v["video_id"]: v for v in truth["downstream"]["videos"]}
    for vid, texts in sentences.items():
        assert len(texts) == 5 and all(down_truth[vid]["attributes"]["colour"] in t for t in texts)
        assert (root / "videos" / f"{vid}.mp4").is_file()

    with (root / "MSRVTT_train.9k.csv").open(newline="") as fh:
        train = [row["video_id"] for row in csv.DictReader(fh)]
    assert train == [v for v in videos if videos[v]["split"] == "train"]
    for name, split in (("MSRVTT_JSFUSION_test.csv", "test"), ("MSRVTT_val.csv", "validate")):
        with (root / name).open(newline="") as fh:
            reader = csv.DictReader(fh)
            assert reader.fieldnames == ["key", "vid_key", "video_id", "sentence"]
            rows = list(reader)
        assert [r["video_id"] for r in rows] == [v for v in videos if videos[v]["split"] == split]
        for r in rows:
            assert r["sentence"] in sentences[r["video_id"]]
        # Distinct attributes within a split: every query has exactly one right video.
        combos = {tuple(down_truth[r["video_id"]]["attributes"].values()) for r in rows}
        assert len(combos) == len(rows)


def test_gop_and_b_frames_as_requested(synthetic_corpus: CorpusManifest) -> None:
    gop = synthetic_corpus.config.gop
    for vid in synthetic_corpus.video_ids:
        with av.open(str(synthetic_corpus.videos / f"{vid}.mp4")) as container:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            assert ctx.name == "h264" and ctx.pix_fmt == "yuv420p" and ctx.has_b_frames
            assert (ctx.width, ctx.height) == (320, 240)
            packets = [p for p in container.demux(stream) if p.size]
            rate = Fraction(30)
            keyframes = sorted(round(p.pts * stream.time_base * rate) for p in packets if p.is_keyframe)
            # Decode order differs from presentation order only when B-frames are used.
            assert [p.pts for p in packets] != sorted(p.pts for p in packets)
        with av.open(str(synthetic_corpus.videos / f"{vid}.mp4")) as container:
            types = {str(f.pict_type).split(".")[-1] for f in container.decode(video=0)}
        n = len(packets)
        assert n > gop  # so that a second keyframe exists and seeking to it matters
        assert keyframes == list(range(0, n, gop))
        assert "B" in types or "3" in types


def test_visual_attributes_survive_32x32(synthetic_corpus: CorpusManifest) -> None:
    """The colour (nearest palette entry) and the motion (centroid shift) are readable at 32x32."""
    truth = synthetic_corpus.load_truth()
    palette = {name: np.array(rgb, float) for name, rgb in COLOURS.items()}
    for vid in synthetic_corpus.video_ids:
        frames, _, _ = decode(synthetic_corpus.videos / f"{vid}.mp4")
        for clip in (c for c in truth["clips"] if c["video_id"] == vid):
            a = clip["attributes"]
            sampled = clip["full_layout"]["sampled_indices"]
            centroids = []
            for i in (sampled[0], sampled[-1]):
                small = np.asarray(Image.fromarray(frames[i]).resize((32, 32), Image.BICUBIC)).astype(float)
                small = small[: band_top(32)]
                saturation = small.max(axis=2) - small.min(axis=2)
                mask = saturation > 80  # the background is grey, the stamp black/white
                assert mask.sum() >= 6, clip["clip_id"]
                mean = small[mask].mean(axis=0)
                nearest = min(palette, key=lambda name: float(np.linalg.norm(palette[name] - mean)))
                assert nearest == a["colour"], (clip["clip_id"], nearest, a)
                ys, xs = np.nonzero(mask)
                centroids.append((xs.mean(), ys.mean()))
            dx = centroids[1][0] - centroids[0][0]
            dy = centroids[1][1] - centroids[0][1]
            expected = {"left": (dx < -3), "right": (dx > 3), "up": (dy < -2), "down": (dy > 2)}
            assert expected[a["motion"]], (clip["clip_id"], a["motion"], dx, dy)


# ---- determinism, overwrite, CLI --------------------------------------------------------------------


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    options = {"downstream_videos": (1, 1, 1), "clip_seconds": (1.0, 1.5), "downstream_seconds": 0.5}
    a = generate(tmp_path / "a", 1, 2, seed=5, **options)
    b = generate(tmp_path / "b", 1, 2, seed=5, workers=2, **options)  # parallel encoding: same bytes
    c = generate(tmp_path / "c", 1, 2, seed=6, **options)
    digest_a = tree_digest(a.root)
    assert (
        len(digest_a) == 1 + 1 + 2 + 1 + 1 + 4 + 3
    )  # meta, video, clips, subtitles, truth, 4 csv/json, 3 videos
    assert digest_a == tree_digest(b.root)
    assert a.load_truth()["clips"] != c.load_truth()["clips"]
    assert digest_a["videos/" + a.video_ids[0] + ".mp4"] not in tree_digest(c.root).values()


_CORPUS_DIGEST = """
import hashlib, sys
from pathlib import Path
from synthetic.corpus import generate
m = generate(Path(sys.argv[1]), 2, 2, seed=3, downstream_videos=(1, 0, 0), clip_seconds=(1.0, 1.5))
print(" ".join(hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(m.root.rglob("*.mp4"))))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="MALLOC_PERTURB_ is a glibc malloc setting")
def test_bytes_do_not_depend_on_leftover_heap_contents(tmp_path: Path) -> None:
    """libx264's mbtree read heap memory it never wrote (docs: pipeline/frame_convert.py), so the corpus,
    and every demo number computed from it, changed between runs; MALLOC_PERTURB_ makes that visible."""
    digests = []
    for fill in ("1", "200"):
        r = subprocess.run(
            [sys.executable, "-c", _CORPUS_DIGEST, str(tmp_path / fill)],
            cwd=ROOT,
            env={**os.environ, "MALLOC_PERTURB_": fill},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        digests.append(r.stdout.split())
    assert len(digests[0]) == 2 + 2 * 2 + 1 and digests[0] == digests[1]


def test_overwrite_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "corpus"
    args = ["--out", str(out), "--videos", "1", "--clips-per-video", "1", "--downstream", "0", "0", "1"]
    args += ["--clip-seconds", "1", "1", "--downstream-seconds", "0.5", "--seed", "3"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert Path(printed["truth"]).is_file()
    keep = out / "notes.txt"
    keep.write_text("not ours")
    assert main(args) == 2  # refuses to overwrite an existing corpus
    assert "already holds a corpus" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert keep.read_text() == "not ours"  # overwrite removes only the generator's own outputs
    assert main([*args, "--overwrite", "--width", "321"]) == 2  # odd size: clear error, no traceback
    manifest = load_manifest(out)
    assert len(manifest.clip_ids) == 1 and manifest.downstream_ids == ("video0",)
