"""Every dataset format of the annotation layer on small files written like the published ones
(structure as documented, content made up), messy variants included; detection and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.annotations import AnnotationError, detect_format, group_by_video, read_annotations, read_ids

BOM = "\ufeff"


def write(p: Path, text: str, *, messy: bool = False) -> Path:
    """`messy`: a UTF-8 BOM, CRLF line ends and no trailing newline, as several public copies."""
    if messy:
        text = BOM + text.rstrip("\n").replace("\n", "\r\n")
    p.write_bytes(text.encode("utf-8"))
    return p


def fields(ann) -> list[tuple]:
    return [(r.video_id, r.text, r.split, r.start, r.end) for r in ann.records]


@pytest.mark.parametrize("messy", [False, True])
@pytest.mark.parametrize("delim", [",", ";"])
def test_msrvtt_jsfusion_csv(tmp_path: Path, messy: bool, delim: str) -> None:
    text = (
        f"key{delim}vid_key{delim}video_id{delim}sentence\n"
        f"ret0{delim}msr9001{delim}video9001{delim}a man is slicing a red pepper\n"
        f'ret1{delim}msr9002{delim}video9002.mp4{delim}"  a woman, smiling,  sings"\n'
    )
    p = write(tmp_path / "MSRVTT_JSFUSION_test.csv", text, messy=messy)
    assert detect_format(p) == "msrvtt_csv"
    ann = read_annotations(p)
    assert [(r.video_id, r.text) for r in ann.records] == [
        ("video9001", "a man is slicing a red pepper"),
        ("video9002", "a woman, smiling, sings"),
    ]


def test_msrvtt_id_lists_by_video_id(tmp_path: Path) -> None:
    p = write(tmp_path / "MSRVTT_train.9k.csv", "video_id\nvideo42\nvideo7\nvideo42\n", messy=True)
    assert detect_format(p) == "msrvtt_ids" and read_ids(p) == ["video42", "video7"]
    # an id list with more columns is read by its video_id column, wherever it is
    q = write(tmp_path / "ids.csv", "key,video_id\nk0,video3\nk1,video4\n")
    assert read_ids(q, "msrvtt_ids") == ["video3", "video4"]
    with pytest.raises(AnnotationError, match=r"header holding \['video_id'\].*found header \['vid'\]"):
        read_ids(write(tmp_path / "bad.csv", "vid\nvideo1\n"), "msrvtt_ids")


def test_msrvtt_data_json_with_splits_and_extra_keys(tmp_path: Path) -> None:
    doc = {
        "info": {"year": 2016},
        "videos": [
            {"video_id": "video0", "split": "train", "category": 9, "url": "https://x"},
            {"video_id": "video9001", "split": "test", "category": 2},
        ],
        "sentences": [
            {"video_id": "video0", "caption": "a cartoon plays", "sen_id": 0},
            {"video_id": "video9001", "caption": " a man cooks ", "sen_id": 1},
            {"video_id": "video9001", "caption": "someone cooks", "sen_id": 2},
        ],
    }
    p = write(tmp_path / "MSRVTT_data.json", json.dumps(doc, indent=1), messy=True)
    assert detect_format(p) == "msrvtt_json"
    ann = read_annotations(p, split="test")
    assert fields(ann) == [
        ("video9001", "a man cooks", "test", None, None),
        ("video9001", "someone cooks", "test", None, None),
    ]
    assert [r.split for r in read_annotations(p).records] == ["train", "test", "test"]


@pytest.mark.parametrize(
    "fmt", ["msrvtt_json", "caption_list_json", "lsmdc_json", "activitynet_json", "didemo_json"]
)
def test_list_form_one_caption_or_a_list(tmp_path: Path, fmt: str) -> None:
    doc = [
        {"video": "video9001.mp4", "caption": "a man cooks", "extra": 1},
        {"video": "sub/video9002.mp4", "caption": ["one", "  two "]},
    ]
    p = write(tmp_path / "ret.json", json.dumps(doc))
    assert detect_format(p) == "caption_list_json"
    ann = read_annotations(p, fmt)
    assert [(r.video_id, r.text) for r in ann.records] == [
        ("video9001", "a man cooks"),
        ("video9002", "one"),
        ("video9002", "two"),
    ]


def test_didemo_original_times_and_duplicate_names(tmp_path: Path) -> None:
    link = "https://www.flickr.com/video_download.gne?id=1234567890"
    doc = [
        {"video": "12345678@N00_1234567890_abcdef1234.mov", "description": "the dog jumps into the lake",
         "times": [[0, 0], [0, 1], [0, 1], [1, 1]], "num_segments": 6, "annotation_id": 1, "dl_link": link},
        {"video": "98765@N01_222_ff.mp4", "description": " a girl waves ", "times": [[2, 2]], "annotation_id": 2,
         "dl_link": "https://www.flickr.com/video_download.gne?id=222"},
        # the same Flickr video under a second name (other extension, same dl_link)
        {"video": "12345678@N00_1234567890_abcdef1234.mp4", "description": "the dog swims back",
         "times": [[2, 3]], "annotation_id": 3, "dl_link": link},
        {"video": "55@N02_333_ee", "description": "camera pans", "times": [[4, 4]], "annotation_id": 4},
    ]  # fmt: skip
    p = write(tmp_path / "test_data.json", json.dumps(doc), messy=True)
    assert detect_format(p) == "didemo_json"
    ann = read_annotations(p)
    videos = group_by_video(ann.records)
    assert list(videos) == ["12345678@N00_1234567890_abcdef1234", "98765@N01_222_ff", "55@N02_333_ee"]
    first = videos["12345678@N00_1234567890_abcdef1234"]
    assert [r.text for r in first] == ["the dog jumps into the lake", "the dog swims back"]
    assert (first[0].start, first[0].end) == (0.0, 10.0)  # most voted [0, 1]: segments 0-1 = 0-10 s


def test_lsmdc_tsv(tmp_path: Path) -> None:
    body = (
        "1010_SOME_MOVIE_00.12.03.100-00.12.07.900\t00.12.03.100\t00.12.07.900\t00.12.03.100\t00.12.07.900\t"
        'SOMEONE opens the door. "Hi\n'
        "1010_SOME_MOVIE_00.12.08.000-00.12.09.000\t00.12.08.000\t00.12.09.000\t00.12.08.000\t00.12.09.000\t"
        "  He leaves.\n"
    )
    p = write(tmp_path / "LSMDC16_challenge_1000_publictect.csv", body, messy=True)
    assert detect_format(p) == "lsmdc_tsv"
    ann = read_annotations(p)
    assert [(r.video_id, r.text) for r in ann.records] == [
        ("1010_SOME_MOVIE_00.12.03.100-00.12.07.900", 'SOMEONE opens the door. "Hi'),
        ("1010_SOME_MOVIE_00.12.08.000-00.12.09.000", "He leaves."),
    ]


@pytest.mark.parametrize("fmt", ["activitynet_json", "youcook2_json"])
def test_dense_captions_with_timestamps(tmp_path: Path, fmt: str) -> None:
    doc = {
        "v_AbCdEfGhIjK": {"duration": 55.2, "timestamps": [[0.3, 55.2], [13.8, 54.3]],
                          "sentences": ["A man lifts a bar.", "  He drops it."]},
        "v_ZZZZZZZZZZZ": {"duration": 5, "timestamps": [], "sentences": []},
    }  # fmt: skip
    p = write(tmp_path / "val_1.json", json.dumps(doc), messy=True)
    assert detect_format(p) == "activitynet_json"
    ann = read_annotations(p, fmt)
    assert fields(ann) == [
        ("v_AbCdEfGhIjK", "A man lifts a bar.", None, 0.3, 55.2),
        ("v_AbCdEfGhIjK", "He drops it.", None, 13.8, 54.3),
    ]
    assert ann.empty == 1  # the video without sentences
    ids = write(tmp_path / "val_ids.json", json.dumps(["v_ZZZZZZZZZZZ"]))
    assert read_annotations(p, fmt, ids=str(ids)).records == []


def test_msvd_captions_and_split_lists(tmp_path: Path) -> None:
    caps = write(
        tmp_path / "captions_msvd.json",
        json.dumps({"AbCdEfGhIjK_5_15": ["a squirrel eats a nut", "x"], "Zz_1_2": ["y"]}),
    )
    lst = write(tmp_path / "test_list.txt", "Zz_1_2\nAbCdEfGhIjK_5_15\n\n", messy=True)
    assert detect_format(caps) == "msvd_json" and detect_format(lst) == "id_list"
    ann = read_annotations(caps, ids=lst)
    assert [(r.video_id, r.text) for r in ann.records] == [
        ("Zz_1_2", "y"),
        ("AbCdEfGhIjK_5_15", "a squirrel eats a nut"),
        ("AbCdEfGhIjK_5_15", "x"),
    ]


def test_coco_cc_webvid(tmp_path: Path) -> None:
    coco = {"info": {}, "licenses": [], "images": [{"id": 1, "file_name": "a.jpg"}],
            "annotations": [{"image_id": 1, "id": 7, "caption": "A cat on a sofa.\n"}], "type": "captions"}  # fmt: skip
    p = write(tmp_path / "captions_val2017.json", json.dumps(coco), messy=True)
    assert detect_format(p) == "coco_json"
    assert [(r.video_id, r.text) for r in read_annotations(p).records] == [("1", "A cat on a sofa.")]
    cc3m = write(tmp_path / "cc3m.tsv", "a dog runs\thttps://example.com/1.jpg\n", messy=True)
    cc12m = write(tmp_path / "cc12m.tsv", "https://example.com/2.jpg\tactor attends\n")
    assert detect_format(cc3m) == detect_format(cc12m) == "cc_tsv"
    assert read_annotations(cc3m).texts == ["a dog runs"] and read_annotations(cc12m).texts == [
        "actor attends"
    ]
    web = write(
        tmp_path / "results_2M_val.csv",
        "videoid,name,page_idx,page_dir,duration,contentUrl\n"
        '1066,"Aerial view of a forest, 4k",12,001001_001050,PT00H01M17S,https://example.com/1066.mp4\n',
        messy=True,
    )
    assert detect_format(web) == "webvid_csv"
    assert fields(read_annotations(web)) == [("1066", "Aerial view of a forest, 4k", None, 0.0, 77.0)]


def test_hdvila_subtitles_and_captions_parquet(tmp_path: Path) -> None:
    jl = write(
        tmp_path / "subs.jsonl",
        json.dumps({"clip_id": "a.0.mp4", "text": "so today", "lang": "en"}) + "\n",
        messy=True,
    )
    assert detect_format(jl) == "subtitles_jsonl" and read_annotations(jl).texts == ["so today"]
    sp = tmp_path / "subs.parquet"
    pq.write_table(pa.table({"clip_id": ["a.0.mp4"], "text": ["um yeah"]}), sp)
    assert detect_format(sp) == "subtitles_jsonl"
    assert [(r.video_id, r.text) for r in read_annotations(sp).records] == [("a.0.mp4", "um yeah")]
    cp = tmp_path / "captions.parquet"
    pq.write_table(
        pa.table({"key": ["a_0"], "clip_id": ["a.0.mp4"], "caption": ["a man"], "captioner": ["ofa"]}), cp
    )
    assert detect_format(cp) == "captions_parquet"
    assert [(r.video_id, r.text) for r in read_annotations(cp).records] == [("a.0.mp4", "a man")]


@pytest.mark.parametrize(
    ("fmt", "content", "found"),
    [
        (
            "msrvtt_csv",
            '[{"video": "video1.mp4", "caption": "x"}]',
            "found JSON",
        ),  # never a json parsed as csv
        ("lsmdc_tsv", '[{"video": "a/b.avi", "caption": "SOMEONE sits"}]', "found JSON"),
        ("msrvtt_ids", '{"videos": []}', "found JSON"),
        ("msrvtt_json", "key,vid_key,video_id,sentence\nret0,msr1,video1,a\n", "not valid JSON"),
        ("activitynet_json", '[{"video": "v_a.mp4", "text": "x"}]', "a list of objects with keys"),
        ("msvd_json", '{"a": "not a list"}', "an object with keys"),
        ("didemo_json", '{"annotations": []}', "an object with keys"),
        ("coco_json", "[]", "a list of nothing"),
        ("webvtt", "1\n00:00:01,000 --> 00:00:02,000\nx\n", "first line"),
    ],
)
def test_wrong_format_is_one_line(tmp_path: Path, fmt: str, content: str, found: str) -> None:
    p = write(tmp_path / "file", content)
    with pytest.raises(AnnotationError, match=found) as e:
        (read_ids if fmt == "msrvtt_ids" else read_annotations)(p, fmt)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and fmt in msg and "found" in msg


def test_unknown_format_option_and_undetectable(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(AnnotationError, match="one of: activitynet_json, caption_list_json"):
        read_annotations(p, "msrvtt")
    with pytest.raises(AnnotationError, match=r"unknown option\(s\) \['colum'\]"):
        read_annotations(p, "msrvtt_csv", colum="a")
    with pytest.raises(AnnotationError, match=r"caption_column is 0 or 1; found '1'"):
        read_annotations(p, "cc_tsv", caption_column="1")
    with pytest.raises(AnnotationError, match="first line of no known layout"):
        read_annotations(p)
    with pytest.raises(AnnotationError, match="no such file"):
        read_annotations(tmp_path / "absent.json")
    (tmp_path / "bin.txt").write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(AnnotationError, match="not UTF-8"):
        read_annotations(tmp_path / "bin.txt", "text_lines")
