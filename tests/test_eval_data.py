"""Downstream annotation loaders (real formats, messy variants), video lookup and frame decoding."""

from __future__ import annotations

import json
import random
from pathlib import Path

import av
import numpy as np
import pytest

from synthetic.stamp import draw_stamp, read_stamp
from trainer.config import RetrievalDataConfig
from trainer.data.frames import VideoDecodeError, decode_frames, jittered_indices, preprocess, uniform_indices
from trainer.data.retrieval import (
    RetrievalSet,
    VideoEntry,
    index_videos,
    join_paragraph,
    load_activitynet,
    load_didemo,
    load_lsmdc,
    load_msrvtt_captions,
    load_msrvtt_test,
    load_msrvtt_train,
    load_msvd,
    load_split,
    read_table,
    resolve_videos,
)


def write_video(
    path: Path, n: int, *, size: tuple[int, int] = (128, 96), fps: int = 25, bframes: bool = True
) -> None:
    """An H.264 mp4 whose frame i carries a readable stamp of i (B-frames on, as real uploads)."""
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"bf": "2" if bframes else "0", "g": "12", "preset": "ultrafast", "crf": "10"}
        for i in range(n):
            img = np.full((h, w, 3), (i * 7) % 200, dtype=np.uint8)
            draw_stamp(img, i)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


# ------------------------------------------------------------------------------------------- tables


def test_msrvtt_test_csv_plain_and_messy(tmp_path: Path) -> None:
    plain = tmp_path / "MSRVTT_JSFUSION_test.csv"
    plain.write_text(
        "key,vid_key,video_id,sentence\n"
        "ret0,msr7001,video7001,a man is talking\n"
        'ret1,msr7002,video7002,"a woman, smiling, sings"\n',
        encoding="utf-8",
    )
    messy = tmp_path / "semicolon.csv"
    # UTF-8 BOM, ';' delimiter, CRLF line ends, no trailing newline (the public semicolon copy)
    messy.write_bytes(
        "\ufeffkey;vid_key;video_id;sentence\r\nret0;msr7001;video7001;a man is  talking \r\n"
        "ret1;msr7002;video7002.mp4;a woman, smiling, sings".encode()
    )
    for p in (plain, messy):
        rs = load_msrvtt_test(p)
        assert [v.key for v in rs.videos] == ["video7001", "video7002"]
        assert [v.texts for v in rs.videos] == [["a man is talking"], ["a woman, smiling, sings"]]
        assert rs.queries() == (["a man is talking", "a woman, smiling, sings"], [0, 1])
        assert rs.skipped == []


def test_read_table_sniffs_tab_without_header(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("a1\tb\tc 2\nd3\te\tf\n", encoding="utf-8")
    head, rows = read_table(p)
    assert head is None and rows == [["a1", "b", "c 2"], ["d3", "e", "f"]]


def test_msrvtt_train_and_full_captions(tmp_path: Path) -> None:
    ids = tmp_path / "MSRVTT_train.9k.csv"
    ids.write_text("video_id\r\nvideo0\r\nvideo1\r\nvideo2\r\n", encoding="utf-8")
    data = {
        "videos": [{"video_id": f"video{i}", "split": "train" if i < 3 else "test"} for i in range(5)],
        "sentences": [
            {"video_id": f"video{k % 5}", "caption": f"caption {k}", "sen_id": k} for k in range(20)
        ],
    }
    dj = tmp_path / "MSRVTT_data.json"
    dj.write_text(json.dumps(data), encoding="utf-8")
    # video2 has captions; drop them to check the skip record
    data["sentences"] = [s for s in data["sentences"] if s["video_id"] != "video2"]
    dj.write_text(json.dumps(data), encoding="utf-8")
    tr = load_msrvtt_train(ids, dj)
    assert [v.key for v in tr.videos] == ["video0", "video1"]
    assert tr.videos[0].texts == ["caption 0", "caption 5", "caption 10", "caption 15"]
    assert len(tr.skipped) == 1 and "video2" in tr.skipped[0]
    full = load_msrvtt_captions(dj, split="test")
    assert [v.key for v in full.videos] == ["video3", "video4"]
    texts, owner = full.queries()
    assert owner == [0, 0, 0, 0, 1, 1, 1, 1] and texts[0] == "caption 3"


def test_didemo_paragraph_joins_in_order_and_resolves_stems(tmp_path: Path) -> None:
    items = [
        {"annotation_id": 1, "description": "the dog runs ", "times": [[0, 0]], "video": "a_1_x.mov",
         "num_segments": 6},
        {"annotation_id": 2, "description": "a ball flies", "times": [[1, 2]], "video": "b_2_y",
         "num_segments": 5},
        {"annotation_id": 3, "description": " the dog  jumps", "times": [[2, 2]], "video": "a_1_x.mov",
         "num_segments": 6},
        {"annotation_id": 4, "description": "", "times": [[2, 2]], "video": "c_3_z.mp4", "num_segments": 6},
    ]  # fmt: skip
    j = tmp_path / "test_data.json"
    j.write_text(json.dumps(items), encoding="utf-8")
    para = load_didemo(j)
    assert para.mode == "paragraph"
    assert [v.key for v in para.videos] == ["a_1_x", "b_2_y"]
    texts, owner = para.queries()
    assert texts == ["the dog runs the dog jumps", "a ball flies"] and owner == [0, 1]
    assert len(para.skipped) == 1
    sent = load_didemo(j, mode="sentence")
    assert sent.queries() == (["the dog runs", "the dog jumps", "a ball flies"], [0, 0, 1])
    assert join_paragraph([" a ", "", "b"]) == "a b"


def test_lsmdc_tab_separated_no_header(tmp_path: Path) -> None:
    p = tmp_path / "LSMDC16_challenge_1000_publictect.csv"
    p.write_text(
        "0001_Movie_A_00.01.02.345-00.01.05.678\t00.01.02.345\t00.01.05.678\t00.01.02.300\t00.01.05.700\t"
        "SOMEONE opens the door.\r\n"
        "0002_Movie_B_00.00.01.000-00.00.02.000\t00.00.01.000\t00.00.02.000\t00.00.01.000\t00.00.02.000\t"
        "He smiles, then leaves.\r\n",
        encoding="utf-8",
    )
    rs = load_lsmdc(p)
    assert [v.key for v in rs.videos] == ["0001_Movie_A_00.01.02.345-00.01.05.678",
                                          "0002_Movie_B_00.00.01.000-00.00.02.000"]  # fmt: skip
    assert rs.queries()[0] == ["SOMEONE opens the door.", "He smiles, then leaves."]


def test_activitynet_paragraph_strips_and_joins(tmp_path: Path) -> None:
    data = {
        "v_AbCdEfGhIjK": {"duration": 10.0, "timestamps": [[0, 4.5], [4, 12.0]],
                          "sentences": ["A man stands in a field.", " He throws a ball."]},
        "v_ZZZZZZZZZZZ": {"duration": 5, "timestamps": [], "sentences": []},
        "v_00000000000": {"duration": 3.5, "timestamps": [[0, 3]], "sentences": ["  Someone waves. "]},
    }  # fmt: skip
    j = tmp_path / "val_1.json"
    j.write_text(json.dumps(data), encoding="utf-8")
    rs = load_activitynet(j)
    assert rs.queries() == (["A man stands in a field. He throws a ball.", "Someone waves."], [0, 1])
    assert len(rs.skipped) == 1
    ids = tmp_path / "val_ids.json"
    ids.write_text(json.dumps(["v_00000000000"]), encoding="utf-8")
    assert [v.key for v in load_activitynet(j, ids_json=ids).videos] == ["v_00000000000"]
    assert load_activitynet(j, mode="sentence").queries()[1] == [0, 0, 1]


def test_msvd_and_load_split_roles(tmp_path: Path) -> None:
    caps = tmp_path / "captions_msvd.json"
    caps.write_text(json.dumps({"abc_1_5": ["one", "two"], "def_2_9": ["three"]}), encoding="utf-8")
    lst = tmp_path / "test_list.txt"
    lst.write_text("abc_1_5\ndef_2_9\nmissing_0_1\n", encoding="utf-8")
    rs = load_msvd(caps, lst)
    assert rs.queries() == (["one", "two", "three"], [0, 0, 1]) and len(rs.skipped) == 1
    cfg = RetrievalDataConfig(dataset="msvd", annotations={"captions_json": str(caps), "test_list": str(lst)})
    assert load_split(cfg, "test").queries() == rs.queries()
    with pytest.raises(ValueError, match="annotations.val_list"):
        load_split(cfg, "val")
    with pytest.raises(ValueError, match="mode must be"):
        load_split(RetrievalDataConfig(dataset="msvd", mode="para", annotations=cfg.annotations), "test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split(RetrievalDataConfig(dataset="kinetics"), "test")


# ------------------------------------------------------------------------------------- video lookup


def test_index_and_resolve_by_stem(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    (root / "0001_Movie_A").mkdir(parents=True)
    (root / "a_1_x.mov").write_bytes(b"x")
    (root / "b_2_y").write_bytes(b"x")  # DiDeMo names without extension
    (root / "0001_Movie_A" / "0001_Movie_A_00.01.02.345-00.01.05.678.avi").write_bytes(b"x")
    idx = index_videos(root)
    rs = RetrievalSet("x", "test", [VideoEntry(k, ["t"]) for k in
                                    ("a_1_x", "b_2_y", "0001_Movie_A_00.01.02.345-00.01.05.678", "gone")])  # fmt: skip
    res = resolve_videos(rs, root, idx)
    assert [p.name for p in res.paths] == ["a_1_x.mov", "b_2_y", "0001_Movie_A_00.01.02.345-00.01.05.678.avi"]
    assert res.missing == ["gone"]
    with pytest.raises(FileNotFoundError):
        index_videos(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ decoding


def test_sampling_indices() -> None:
    assert uniform_indices(30, 12) == [int(x) for x in np.floor(np.linspace(0, 29, 12))]
    assert uniform_indices(5, 12) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    rng = random.Random(0)
    for n in (1, 2, 11, 12, 100):
        for _ in range(20):
            idx = jittered_indices(n, 12, rng)
            assert len(idx) == 12 and idx == sorted(idx) and 0 <= idx[0] and idx[-1] <= n - 1
    with pytest.raises(VideoDecodeError):
        uniform_indices(0, 12)


def test_decode_is_frame_exact_with_bframes(tmp_path: Path) -> None:
    p = tmp_path / "v.mp4"
    write_video(p, 37)
    frames = decode_frames(p, 12)
    assert frames.shape == (12, 96, 128, 3) and frames.dtype == np.uint8
    assert [read_stamp(f) for f in frames] == uniform_indices(37, 12)
    # a span selects frames by presentation time: [0.4 s, 1.0 s) at 25 fps = frames 10..24
    sub = decode_frames(p, 4, span=(0.4, 1.0))
    assert [read_stamp(f) for f in sub] == [10 + i for i in uniform_indices(15, 4)]
    jit = decode_frames(p, 12, rng=random.Random(3))
    assert [read_stamp(f) for f in jit] == jittered_indices(37, 12, random.Random(3))
    x = preprocess(frames, 64)
    assert tuple(x.shape) == (12, 3, 64, 64)
    # CLIP normalisation: pixel value v -> (v/255 - mean)/std per channel
    flat = np.full((1, 8, 8, 3), 255, dtype=np.uint8)
    y = preprocess(flat, 8)
    np.testing.assert_allclose(y[0, :, 0, 0].numpy(), [(1 - 0.48145466) / 0.26862954, (1 - 0.4578275) / 0.26130258,
                                                       (1 - 0.40821073) / 0.27577711], rtol=1e-6)  # fmt: skip


def test_corrupt_and_empty_videos_raise_decode_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for p in (bad, empty, tmp_path / "absent.mp4"):
        with pytest.raises(VideoDecodeError):
            decode_frames(p, 12)
    truncated = tmp_path / "trunc.mp4"
    write_video(tmp_path / "full.mp4", 30)
    data = (tmp_path / "full.mp4").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    try:  # a half file either decodes its remaining frames or fails cleanly: never another exception type
        frames = decode_frames(truncated, 4)
        assert frames.shape[0] == 4
    except VideoDecodeError:
        pass


def test_msrvtt_holdout_split_is_disjoint_and_reproducible(tmp_path: Path) -> None:
    from trainer.data.retrieval import main as data_main
    from trainer.data.retrieval import msrvtt_holdout

    ids = tmp_path / "MSRVTT_train.9k.csv"
    ids.write_text("video_id\n" + "".join(f"video{i}\n" for i in range(20)), encoding="utf-8")
    sentences = [{"video_id": f"video{i}", "caption": f"clip {i}, take {k}", "sen_id": 3 * i + k}
                 for i in range(20) for k in range(3)]  # fmt: skip
    dj = tmp_path / "MSRVTT_data.json"
    dj.write_text(json.dumps({"videos": [], "sentences": sentences}), encoding="utf-8")
    tr, va = msrvtt_holdout(ids, dj, tmp_path / "a", num_val=5, seed=1)
    train = load_msrvtt_train(tr, dj)
    val = load_msrvtt_test(va)
    assert len(train.videos) == 15 and len(val.videos) == 5
    assert not {v.key for v in train.videos} & {v.key for v in val.videos}
    assert all(v.texts == [f"clip {v.key.removeprefix('video')}, take 0"] for v in val.videos)  # quoted comma
    assert data_main(["msrvtt-holdout", "--train-ids", str(ids), "--data-json", str(dj), "--out",
                      str(tmp_path / "b"), "--num-val", "5", "--seed", "1"]) == 0  # fmt: skip
    assert (tmp_path / "b" / "MSRVTT_val.csv").read_text() == va.read_text()
    with pytest.raises(ValueError):
        msrvtt_holdout(ids, dj, tmp_path / "c", num_val=20)
